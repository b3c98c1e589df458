"""Storing the CNN: safetensors weights in a model bundle, the layer table in its manifest.

Weights are written with safetensors (no code runs on load, unlike pickle)
through the model store's :class:`~icibenefit.model_store.BundleWriter`; the
same format is used for a stand-alone file, e.g. cached pretrained weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from icibenefit.model_store import BundleWriter, ModelBundle
from icibenefit.pipeline.deep import (
    FINE_TUNED_CONV_LAYERS,
    INPUT_SHAPE,
    LAYER_TABLE,
    N_DEEP_FEATURES,
    NoduleXNet,
    load_network,
)

#: Bundle member of the fine-tuned network (DF-imm extractor and CNN-baseline).
CNN_TENSORS = "cnn"


def cnn_manifest_entry(
    pretraining: Mapping[str, Any] | None = None, fine_tuning: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The CNN's part of a bundle manifest (put it under ``extra["cnn"]``).

    Parameters
    ----------
    pretraining
        ``PretrainReport.as_dict()`` - source, held-out malignancy AUC, statistics.
    fine_tuning
        ``TrainingHistory.as_dict()`` of the PFS6 fine-tuning.
    """
    return {
        "architecture": "NoduleX-style 2D CNN (icibenefit.pipeline.deep)",
        "tensors": CNN_TENSORS,
        "input_shape": list(INPUT_SHAPE),
        "deep_feature_layer": "fc500",
        "n_deep_features": N_DEEP_FEATURES,
        "fine_tuned_layers": [*FINE_TUNED_CONV_LAYERS, "fc500", "out"],
        "layer_table": [dict(row) for row in LAYER_TABLE],
        "pretraining": dict(pretraining or {}),
        "fine_tuning": dict(fine_tuning or {}),
    }


def add_network(
    writer: BundleWriter, state_dict: Mapping[str, torch.Tensor], name: str = CNN_TENSORS
) -> None:
    """Add the network's weights to a bundle being written."""
    writer.add_tensors(name, state_dict)


def network_from_bundle(bundle: ModelBundle, name: str = CNN_TENSORS) -> NoduleXNet:
    """The network stored in a verified bundle, in eval mode."""
    return load_network(bundle.tensors(name))


def save_weights(state_dict: Mapping[str, torch.Tensor], path: Path) -> Path:
    """Write a state dict to one safetensors file (tensors made contiguous on CPU)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(path))
    return path


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict written by :func:`save_weights`."""
    return dict(load_file(str(path)))
