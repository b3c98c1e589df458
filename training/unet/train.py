"""Training the UNET to segment the tumour on the training patients' CT patches.

Loss = binary cross-entropy + soft Dice (1 - 2|P.M| / (|P| + |M|), smoothed by
1 voxel, over each patch's 5 slices), the usual pair for small foreground
objects: BCE gives well-behaved gradients from the start, Dice keeps the
small tumour from being drowned by background.  Adam, fixed epochs (no
validation split: the segmentation target is a means to the features, and
the cohorts are small), geometric augmentation (rotation, shift, mirror)
applied identically to the patch and its mask through the DF-imm CNN's
:func:`~icibenefit.training.cnn.loop.augment`, and the CNN's
:func:`~icibenefit.training.cnn.loop.deterministic_torch` so the same seed
gives the same weights on CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from icibenefit.errors import TrainingError
from icibenefit.pipeline.unet import (
    INPUT_SHAPE,
    LAYER_TABLE,
    N_DEEP_FEATURES,
    PATCH_PIXELS,
    PATCH_SIDE_MM,
    UNet25D,
)
from icibenefit.training.cnn.loop import augment, deterministic_torch

DICE_SMOOTH = 1.0
#: Bundle member (``tensors/unet.safetensors``) of the trained UNET.
UNET_TENSORS = "unet"


@dataclass(frozen=True)
class UNetConfig:
    """Optimisation settings (defaults: about a minute for ~100 patches on one core)."""

    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    augment: bool = True
    max_shift_px: float = 3.0
    # One thread: on a shared 2-core machine two torch threads ran ~10x slower
    # (oversubscription); the result does not depend on it (deterministic mode).
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.num_threads < 1:
            raise ValueError("epochs, batch_size and num_threads must be positive")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be positive and weight_decay non-negative")


@dataclass
class UNetHistory:
    """Mean training loss and Dice coefficient per epoch."""

    loss: list[float] = field(default_factory=list)
    dice: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the bundle manifest."""
        return asdict(self)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with logits + soft Dice loss, both averaged over the batch."""
    bce = functional.binary_cross_entropy_with_logits(logits, target)
    probability = torch.sigmoid(logits).flatten(1)
    flat = target.flatten(1)
    overlap = (probability * flat).sum(dim=1)
    dice = (2 * overlap + DICE_SMOOTH) / (probability.sum(dim=1) + flat.sum(dim=1) + DICE_SMOOTH)
    return bce + (1 - dice).mean()


def dice_coefficient(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Hard Dice (threshold 0.5) of a batch, pooled over all voxels."""
    predicted = (logits > 0).float()
    total = float(predicted.sum() + target.sum())
    return 1.0 if total == 0 else float(2 * (predicted * target).sum()) / total


def train_unet(
    images: NDArray[np.floating],
    masks: NDArray[np.integer],
    config: UNetConfig,
    seed: int,
) -> tuple[dict[str, torch.Tensor], UNetHistory]:
    """Train a fresh UNET on patches ``[n, 5, 32, 32]`` and their 0/1 masks.

    Returns
    -------
    tuple
        The state dict (CPU tensors, for safetensors) and the per-epoch history.

    Raises
    ------
    TrainingError
        When there are no patches or images and masks disagree in shape.
    """
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))
    if len(x) == 0 or x.shape != m.shape or tuple(x.shape[1:]) != INPUT_SHAPE:
        raise TrainingError(
            f"UNET training needs patches {INPUT_SHAPE} with masks of the same shape, "
            f"got {tuple(x.shape)} and {tuple(m.shape)}"
        )
    history = UNetHistory()
    with deterministic_torch(seed, config.num_threads):
        network = UNet25D()
        generator = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.Adam(
            network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        for _ in range(config.epochs):
            network.train()
            order = torch.randperm(len(x), generator=generator)
            total_loss, total_dice = 0.0, 0.0
            for index in torch.split(order, config.batch_size):
                batch, target = x[index], m[index]
                if config.augment:
                    # One transform for patch and mask: stack them as channels.
                    both = augment(
                        torch.cat([batch, target], dim=1), generator, config.max_shift_px
                    )
                    batch, target = both[:, : x.shape[1]], (both[:, x.shape[1] :] >= 0.5).float()
                optimiser.zero_grad()
                logits = network(batch)
                loss = dice_bce_loss(logits, target)
                loss.backward()
                optimiser.step()
                total_loss += loss.item() * len(index)
                total_dice += dice_coefficient(logits.detach(), target) * len(index)
            history.loss.append(total_loss / len(x))
            history.dice.append(total_dice / len(x))
    network.eval()
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    if not all(math.isfinite(v) for v in history.loss):
        raise TrainingError("UNET training diverged (non-finite loss)")
    return state, history


def unet_manifest_entry(
    config: UNetConfig, history: UNetHistory, n_patches: int, seed: int
) -> dict[str, Any]:
    """The UNET's part of a bundle manifest (``extra["unet"]``)."""
    return {
        "architecture": "2.5D UNET (icibenefit.pipeline.unet)",
        "tensors": UNET_TENSORS,
        "input_shape": list(INPUT_SHAPE),
        "patch_side_mm": PATCH_SIDE_MM,
        "patch_pixels": PATCH_PIXELS,
        "deep_features": "global average pool of the bottleneck",
        "n_deep_features": N_DEEP_FEATURES,
        "loss": "BCE + soft Dice",
        "layer_table": [dict(row) for row in LAYER_TABLE],
        "config": asdict(config),
        "n_patches": n_patches,
        "seed": seed,
        "history": history.as_dict(),
    }
