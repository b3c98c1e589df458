"""The NoduleX-style CNN behind the deep features (DF-imm) and the CNN-baseline model.

Seed 1 takes NoduleX as its reference network but the original layer table is not
public, so this module fixes one and records it as data (:data:`LAYER_TABLE`) for
the model bundle's manifest. Input: 5 axial slices centred on the tumour centroid,
each a 10 x 10 cm square resampled to 47 x 47 pixels, clipped to [-1000, 3050] HU
and normalised by :mod:`icibenefit.pipeline.patches`; the slices are the channels of
a 2D CNN.

======  ==========  ===========================================  ================
name    kind        parameters                                   output shape
======  ==========  ===========================================  ================
input   --          5 slices x 47 x 47                           5 x 47 x 47
conv1   Conv2d      5 -> 32, kernel 5, padding 2; ReLU           32 x 47 x 47
pool1   MaxPool2d   kernel 2, stride 2                           32 x 23 x 23
conv2   Conv2d      32 -> 64, kernel 3, padding 1; ReLU          64 x 23 x 23
pool2   MaxPool2d   kernel 2, stride 2                           64 x 11 x 11
conv3   Conv2d      64 -> 96, kernel 3, padding 1; ReLU          96 x 11 x 11
pool3   MaxPool2d   kernel 2, stride 2                           96 x 5 x 5
conv4   Conv2d      96 -> 128, kernel 3, padding 1; ReLU         128 x 5 x 5
fc500   Linear      3200 -> 500; ReLU  (deep features, DF-imm)   500
drop    Dropout     p = 0.5                                      500
out     Linear      500 -> 2 (logits; softmax gives P(class 1))  2
======  ==========  ===========================================  ================

Why this shape: three pooled stages take 47 px to 5 px (about 20 mm per cell,
the scale of a nodule), four conv layers let fine-tuning unfreeze "the last two
conv layers" (conv3, conv4) while conv1-2 keep the low-level texture filters
learned on nodule malignancy. No batch normalisation: its running statistics
would keep changing in the frozen layers during fine-tuning and make the deep
features depend on the fine-tuning batches.

The deep features are the post-ReLU activations of ``fc500`` (the module
``fc500_act``), read in eval mode so dropout is off. Class 1 is the positive
class of whatever the network was trained for (malignant in pretraining,
responder - PFS beyond the landmark - after fine-tuning).

This module imports torch at import time: import it lazily (inside functions)
from anything on the path of ``icibenefit --help``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import torch
from torch import nn

N_SLICES: Final = 5
PATCH_SIZE: Final = 47
N_DEEP_FEATURES: Final = 500
N_CLASSES: Final = 2
DROPOUT: Final = 0.5
INPUT_SHAPE: Final = (N_SLICES, PATCH_SIZE, PATCH_SIZE)

#: Conv layers that fine-tuning on PFS6 trains (with ``fc500`` and ``out``).
FINE_TUNED_CONV_LAYERS: Final = ("conv3", "conv4")

#: The layer table above as data (JSON values), for the model bundle's manifest.
LAYER_TABLE: Final[list[dict[str, Any]]] = [
    {"name": "input", "kind": "Input", "output_shape": [5, 47, 47]},
    {
        "name": "conv1",
        "kind": "Conv2d",
        "in_channels": 5,
        "out_channels": 32,
        "kernel_size": 5,
        "padding": 2,
        "activation": "ReLU",
        "output_shape": [32, 47, 47],
    },
    {"name": "pool1", "kind": "MaxPool2d", "kernel_size": 2, "output_shape": [32, 23, 23]},
    {
        "name": "conv2",
        "kind": "Conv2d",
        "in_channels": 32,
        "out_channels": 64,
        "kernel_size": 3,
        "padding": 1,
        "activation": "ReLU",
        "output_shape": [64, 23, 23],
    },
    {"name": "pool2", "kind": "MaxPool2d", "kernel_size": 2, "output_shape": [64, 11, 11]},
    {
        "name": "conv3",
        "kind": "Conv2d",
        "in_channels": 64,
        "out_channels": 96,
        "kernel_size": 3,
        "padding": 1,
        "activation": "ReLU",
        "output_shape": [96, 11, 11],
    },
    {"name": "pool3", "kind": "MaxPool2d", "kernel_size": 2, "output_shape": [96, 5, 5]},
    {
        "name": "conv4",
        "kind": "Conv2d",
        "in_channels": 96,
        "out_channels": 128,
        "kernel_size": 3,
        "padding": 1,
        "activation": "ReLU",
        "output_shape": [128, 5, 5],
    },
    {
        "name": "fc500",
        "kind": "Linear",
        "in_features": 3200,
        "out_features": 500,
        "activation": "ReLU",
        "deep_features": True,
        "output_shape": [500],
    },
    {"name": "drop", "kind": "Dropout", "p": DROPOUT, "output_shape": [500]},
    {"name": "out", "kind": "Linear", "in_features": 500, "out_features": 2, "output_shape": [2]},
]

_DEFAULT_BATCH_SIZE: Final = 256


def _row(name: str) -> dict[str, Any]:
    return next(row for row in LAYER_TABLE if row["name"] == name)


class NoduleXNet(nn.Module):
    """The 2D CNN of :data:`LAYER_TABLE`; ``forward`` returns the 2 class logits."""

    def __init__(self) -> None:
        super().__init__()
        convs = [row for row in LAYER_TABLE if row["kind"] == "Conv2d"]
        self.conv1, self.conv2, self.conv3, self.conv4 = (
            nn.Conv2d(
                row["in_channels"],
                row["out_channels"],
                kernel_size=row["kernel_size"],
                padding=row["padding"],
            )
            for row in convs
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.act = nn.ReLU()
        self.fc500 = nn.Linear(_row("fc500")["in_features"], N_DEEP_FEATURES)
        self.fc500_act = nn.ReLU()
        self.drop = nn.Dropout(p=DROPOUT)
        self.out = nn.Linear(N_DEEP_FEATURES, N_CLASSES)

    def deep_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 500 post-ReLU activations of ``fc500`` for a batch ``[n, 5, 47, 47]``."""
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.pool(self.act(self.conv3(x)))
        x = self.act(self.conv4(x))
        # nn.Module.__call__ is typed Any; the layers above return tensors.
        features: torch.Tensor = self.fc500_act(self.fc500(torch.flatten(x, start_dim=1)))
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[n, 2]``."""
        logits: torch.Tensor = self.out(self.drop(self.deep_features(x)))
        return logits


def build_network(seed: int | None = None) -> NoduleXNet:
    """A freshly initialised network, reproducible when ``seed`` is given.

    The seed goes to a private ``torch.Generator`` fork so building a network
    never disturbs the caller's global random state.
    """
    if seed is None:
        return NoduleXNet()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NoduleXNet()


def load_network(state_dict: Mapping[str, torch.Tensor]) -> NoduleXNet:
    """A network in eval mode carrying ``state_dict`` (strict: every weight must match)."""
    model = NoduleXNet()
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


def _as_batches(patches: np.ndarray, batch_size: int) -> list[torch.Tensor]:
    array = np.asarray(patches, dtype=np.float32)
    if array.ndim != 4 or array.shape[1:] != INPUT_SHAPE:
        raise ValueError(f"patches must be [n, 5, 47, 47], got {list(array.shape)}")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return list(torch.split(tensor, batch_size)) if len(tensor) else []


def extract_deep_features(
    model: NoduleXNet, patches: np.ndarray, batch_size: int = _DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """The DF-imm vector of every tumour patch.

    Parameters
    ----------
    model
        A pretrained or fine-tuned :class:`NoduleXNet`; it is switched to eval
        mode (dropout off) so features are a pure function of the input.
    patches
        ``[n, 5, 47, 47]`` float32 patches from :mod:`icibenefit.pipeline.patches`.
    batch_size
        Bounds memory; results do not depend on it.

    Returns
    -------
    numpy.ndarray
        ``[n, 500]`` float32 activations of ``fc500``.
    """
    model.eval()
    with torch.inference_mode():
        chunks = [model.deep_features(batch) for batch in _as_batches(patches, batch_size)]
    if not chunks:
        return np.zeros((0, N_DEEP_FEATURES), dtype=np.float32)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)


def cnn_probability(
    model: NoduleXNet, patches: np.ndarray, batch_size: int = _DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """The network's own probability of class 1 per patch (the CNN-baseline model).

    Returns
    -------
    numpy.ndarray
        ``[n]`` float64 softmax probabilities of class 1 (responder after
        fine-tuning on PFS6).
    """
    model.eval()
    with torch.inference_mode():
        chunks = [
            torch.softmax(model(batch), dim=1)[:, 1] for batch in _as_batches(patches, batch_size)
        ]
    if not chunks:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(chunks).numpy().astype(np.float64)


def deep_features_and_probability(
    model: NoduleXNet, patches: np.ndarray, batch_size: int = _DEFAULT_BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """DF-imm and the CNN-baseline probability from one pass through the conv stack.

    Equal to :func:`extract_deep_features` and :func:`cnn_probability` called
    separately, at half the cost (inference needs both per tumour).
    """
    model.eval()
    features, probabilities = [], []
    with torch.inference_mode():
        for batch in _as_batches(patches, batch_size):
            deep = model.deep_features(batch)
            features.append(deep)
            probabilities.append(torch.softmax(model.out(model.drop(deep)), dim=1)[:, 1])
    if not features:
        return np.zeros((0, N_DEEP_FEATURES), dtype=np.float32), np.zeros(0, dtype=np.float64)
    return (
        torch.cat(features).numpy().astype(np.float32, copy=False),
        torch.cat(probabilities).numpy().astype(np.float64),
    )
