"""The UNET: shapes, determinism, learning on a tiny set, bottleneck features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icibenefit.errors import TrainingError
from icibenefit.pipeline.unet import (
    INPUT_SHAPE,
    N_DEEP_FEATURES,
    UNet25D,
    bottleneck_features,
    feature_names,
    load_unet,
)
from icibenefit.training.unet import UNetConfig, dice_bce_loss, train_unet


def _discs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy patches with a bright disc of random radius and offset, and its mask."""
    rng = np.random.default_rng(seed)
    side = INPUT_SHAPE[1]
    yy, xx = np.mgrid[:side, :side]
    images = rng.normal(0.0, 0.5, (n, *INPUT_SHAPE)).astype(np.float32)
    masks = np.zeros((n, *INPUT_SHAPE), dtype=np.uint8)
    for i in range(n):
        cy, cx = side / 2 + rng.uniform(-3, 3, 2)
        for s in range(INPUT_SHAPE[0]):
            radius = rng.uniform(3, 8) * (1 - abs(s - 2) / 4)
            masks[i, s] = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        images[i] += 1.5 * masks[i]
    return images, masks


def test_shapes() -> None:
    network = UNet25D().eval()
    x = torch.zeros((3, *INPUT_SHAPE))
    with torch.no_grad():
        assert tuple(network(x).shape) == (3, *INPUT_SHAPE)
        bottom, skips = network.encode(x)
    side = INPUT_SHAPE[1]
    assert tuple(bottom.shape) == (3, N_DEEP_FEATURES, side // 8, side // 8)
    assert [tuple(s.shape[2:]) for s in skips] == [(side, side), (side // 2,) * 2, (side // 4,) * 2]
    assert bottleneck_features(network, np.zeros((3, *INPUT_SHAPE))).shape == (3, N_DEEP_FEATURES)
    assert feature_names(2) == ["unet000", "unet001"]


def test_training_is_deterministic_and_seed_dependent() -> None:
    images, masks = _discs(6, seed=1)
    config = UNetConfig(epochs=2, batch_size=4)
    first, _ = train_unet(images, masks, config, seed=3)
    second, _ = train_unet(images, masks, config, seed=3)
    other, _ = train_unet(images, masks, config, seed=4)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_loss_falls_and_dice_rises_on_a_tiny_set() -> None:
    images, masks = _discs(16, seed=2)
    _, history = train_unet(images, masks, UNetConfig(epochs=8, batch_size=8), seed=0)
    assert history.loss[-1] < 0.9 * history.loss[0]
    assert history.dice[-1] > history.dice[0]


def test_bottleneck_features_equal_a_forward_hook_on_the_bottleneck() -> None:
    images, _ = _discs(5, seed=5)
    network = load_unet(UNet25D().state_dict())
    captured: list[torch.Tensor] = []
    handle = network.bottleneck.register_forward_hook(
        lambda _module, _inputs, output: captured.append(output.detach())
    )
    with torch.no_grad():
        network(torch.from_numpy(images))
    handle.remove()
    expected = captured[0].mean(dim=(2, 3)).double().numpy()
    np.testing.assert_allclose(bottleneck_features(network, images), expected, rtol=0, atol=0)
    # Each patient's features do not depend on the batch it is computed in (GroupNorm).
    alone = bottleneck_features(network, images[2:3])
    np.testing.assert_allclose(alone[0], expected[2], rtol=1e-5, atol=1e-6)


def test_loss_is_small_for_a_confident_correct_mask_and_large_for_a_wrong_one() -> None:
    target = torch.zeros((1, *INPUT_SHAPE))
    target[..., 10:20, 10:20] = 1
    right = dice_bce_loss(torch.where(target > 0, 20.0, -20.0), target)
    wrong = dice_bce_loss(torch.where(target > 0, -20.0, 20.0), target)
    assert float(right) < 1e-3 < 1.0 < float(wrong)


def test_rejects_mismatched_patches() -> None:
    images, masks = _discs(2, seed=0)
    with pytest.raises(TrainingError):
        train_unet(images, masks[:, :3], UNetConfig(epochs=1), seed=0)
