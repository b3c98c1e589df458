"""The NoduleX-style network and its extraction API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icibenefit.pipeline import deep


def _patches(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 5, 47, 47)).astype(np.float32)


def test_shapes_follow_the_layer_table() -> None:
    model = deep.build_network(seed=1)
    x = torch.from_numpy(_patches(3))
    assert model(x).shape == (3, deep.N_CLASSES)
    assert deep.extract_deep_features(model, _patches(3)).shape == (3, 500)
    assert deep.cnn_probability(model, _patches(3)).shape == (3,)
    # every table row with weights matches the built module
    for row in deep.LAYER_TABLE:
        module = getattr(model, row["name"], None)
        if row["kind"] == "Conv2d":
            assert isinstance(module, torch.nn.Conv2d)
            assert module.in_channels == row["in_channels"]
            assert module.out_channels == row["out_channels"]
        if row["kind"] == "Linear":
            assert isinstance(module, torch.nn.Linear)
            assert (module.in_features, module.out_features) == (
                row["in_features"],
                row["out_features"],
            )
    sizes = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: sizes.__setitem__(name, list(out.shape[1:]))
        )
        for name in ("conv1", "conv2", "conv3", "conv4", "fc500")
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    table = {row["name"]: row["output_shape"] for row in deep.LAYER_TABLE}
    assert sizes == {name: table[name] for name in sizes}


def test_probabilities_are_in_unit_interval_and_batch_independent() -> None:
    model = deep.build_network(seed=2)
    patches = _patches(10, seed=3)
    whole = deep.cnn_probability(model, patches)
    pieces = deep.cnn_probability(model, patches, batch_size=3)
    assert np.all((whole > 0) & (whole < 1))
    np.testing.assert_allclose(whole, pieces, rtol=1e-5, atol=1e-6)


def test_features_equal_a_forward_hook_on_the_500_unit_layer() -> None:
    model = deep.build_network(seed=4)
    patches = _patches(6, seed=5)
    captured: list[torch.Tensor] = []
    hook = model.fc500_act.register_forward_hook(lambda _m, _i, out: captured.append(out))
    model.eval()
    with torch.no_grad():
        model(torch.from_numpy(patches))
    hook.remove()
    features = deep.extract_deep_features(model, patches)
    np.testing.assert_array_equal(features, captured[0].numpy())
    assert features.min() >= 0.0  # post-ReLU activations


def test_same_seed_builds_identical_networks_without_touching_global_rng() -> None:
    before = torch.random.get_rng_state()
    a, b = deep.build_network(seed=7), deep.build_network(seed=7)
    assert torch.equal(before, torch.random.get_rng_state())
    for (name, wa), (_, wb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(wa, wb), name
    c = deep.build_network(seed=8)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_load_network_round_trips_state_and_rejects_wrong_weights() -> None:
    model = deep.build_network(seed=9)
    patches = _patches(4, seed=10)
    clone = deep.load_network(model.state_dict())
    np.testing.assert_array_equal(
        deep.extract_deep_features(model, patches), deep.extract_deep_features(clone, patches)
    )
    broken = dict(model.state_dict())
    broken.pop("out.bias")
    with pytest.raises(RuntimeError):
        deep.load_network(broken)


@pytest.mark.parametrize("shape", [(2, 5, 47), (2, 4, 47, 47), (2, 5, 48, 47)])
def test_wrong_patch_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="47"):
        deep.extract_deep_features(deep.build_network(seed=0), np.zeros(shape, np.float32))


def test_empty_input_gives_empty_output() -> None:
    model = deep.build_network(seed=0)
    assert deep.extract_deep_features(model, np.zeros((0, 5, 47, 47), np.float32)).shape == (0, 500)
    assert deep.cnn_probability(model, np.zeros((0, 5, 47, 47), np.float32)).shape == (0,)


def test_one_pass_equals_the_two_separate_calls() -> None:
    model = deep.build_network(seed=12)
    patches = _patches(5, seed=13)
    features, probability = deep.deep_features_and_probability(model, patches, batch_size=2)
    np.testing.assert_array_equal(features, deep.extract_deep_features(model, patches, 2))
    np.testing.assert_array_equal(probability, deep.cnn_probability(model, patches, 2))
    empty = deep.deep_features_and_probability(model, np.zeros((0, 5, 47, 47), np.float32))
    assert empty[0].shape == (0, 500)
    assert empty[1].shape == (0,)
