"""Fine-tuning the pretrained CNN on PFS6 (seed 1's transfer to immunotherapy response).

As in seed 1, only the last two conv layers (``conv3``, ``conv4``) and the
classifier (``fc500``, ``out``) learn; ``conv1``-``conv2`` keep the filters
pretrained on nodule malignancy. Every tumour of every training CT (baseline
and follow-ups) is one sample labelled with its patient's PFS6. A validation
set of whole patients - stratified on the label, so both classes are in it -
drives early stopping: training stops when its loss has not improved for
``patience`` epochs and the best epoch's weights are kept.

The fine-tuned network then serves twice: its ``fc500`` activations are the
DF-imm features (:func:`icibenefit.pipeline.deep.extract_deep_features`) and its
own output on the baseline CT is the CNN-baseline model
(:func:`icibenefit.pipeline.deep.cnn_probability`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from icibenefit.errors import TrainingError
from icibenefit.pipeline.deep import FINE_TUNED_CONV_LAYERS, NoduleXNet, load_network
from icibenefit.training.cnn.loop import LoopConfig, TrainingHistory, train_network

#: Modules that learn during fine-tuning; all others are frozen.
TRAINABLE_MODULES = (*FINE_TUNED_CONV_LAYERS, "fc500", "out")


@dataclass(frozen=True)
class FineTuneConfig:
    """Settings of fine-tuning; small learning rate because the start is pretrained.

    ``validation_fraction`` of the patients (rounded to a fold of a stratified
    group k-fold) form the early-stopping validation set.
    """

    max_epochs: int = 30
    patience: int = 5
    batch_size: int = 32
    learning_rate: float = 3e-4
    weight_decay: float = 1e-3
    validation_fraction: float = 0.2
    max_shift_px: float = 3.0
    num_threads: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.validation_fraction <= 0.5:
            raise ValueError("validation_fraction must be in (0, 0.5]")

    def loop_config(self) -> LoopConfig:
        """The training-loop settings (early stopping on, augmentation on)."""
        return LoopConfig(
            epochs=self.max_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            patience=self.patience,
            augment=True,
            max_shift_px=self.max_shift_px,
            num_threads=self.num_threads,
            progress=self.progress,
        )


def freeze_for_fine_tuning(model: NoduleXNet) -> list[str]:
    """Freeze every parameter outside :data:`TRAINABLE_MODULES`; return the trainable names."""
    trainable = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.split(".")[0] in TRAINABLE_MODULES
        if parameter.requires_grad:
            trainable.append(name)
    return trainable


def rebase_input_normalisation(
    state_dict: Mapping[str, torch.Tensor],
    pretrained: tuple[float, float],
    target: tuple[float, float],
) -> dict[str, torch.Tensor]:
    """Weights that accept patches z-scored with ``target`` instead of ``pretrained`` stats.

    Pretraining z-scores HU with its own (mean, std); the immunotherapy cohort's
    patches come z-scored with the bundle's normaliser. Rather than feeding the
    frozen first layers inputs on another scale, the change of variables is
    folded into ``conv1``: with ``a = s_target / s_pre`` and
    ``b = (m_target - m_pre) / s_pre`` the pretrained input is ``a x + b``, so
    ``conv1`` becomes weights ``a W`` and bias ``bias + b sum(W)``. Exact away
    from the 2-pixel zero-padded border; the rest of the network is untouched.

    Parameters
    ----------
    state_dict
        Pretrained weights.
    pretrained
        ``(hu_mean, hu_std)`` of pretraining (``PretrainReport.hu_mean/hu_std``).
    target
        ``(mean_, std_)`` of the cohort's fitted ``IntensityNormalizer``.
    """
    (m_pre, s_pre), (m_target, s_target) = pretrained, target
    if s_pre <= 0 or s_target <= 0:
        raise ValueError("standard deviations must be positive")
    scale, shift = s_target / s_pre, (m_target - m_pre) / s_pre
    rebased = {k: v.detach().clone() for k, v in state_dict.items()}
    weight = rebased["conv1.weight"]
    rebased["conv1.bias"] = rebased["conv1.bias"] + shift * weight.sum(dim=(1, 2, 3))
    rebased["conv1.weight"] = weight * scale
    return rebased


def validation_split(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and validation samples, whole groups (patients) on one side.

    Raises
    ------
    TrainingError
        When there are too few patients of each class for a stratified split.
    """
    n_splits = max(2, round(1 / fraction))
    per_class = [len(np.unique(groups[labels == c])) for c in (0, 1)]
    if min(per_class) < n_splits:
        raise TrainingError(
            f"fine-tuning needs at least {n_splits} patients of each class, got {per_class}"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return train_idx, val_idx


def fine_tune(
    state_dict: Mapping[str, torch.Tensor],
    patches: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    seed: int,
    config: FineTuneConfig | None = None,
) -> tuple[dict[str, torch.Tensor], TrainingHistory]:
    """Fine-tune pretrained weights on PFS6.

    Parameters
    ----------
    state_dict
        Pretrained weights (:func:`icibenefit.training.cnn.pretrain.pretrain`),
        rebased to the cohort's intensity normalisation with
        :func:`rebase_input_normalisation`.
    patches
        ``[n, 5, 47, 47]`` normalised patches, one per tumour per training CT.
    labels
        ``[n]`` PFS6 of each patch's patient (1 = progression-free beyond 6 months).
    groups
        ``[n]`` patient of each patch (pseudonymised id); a patient's tumours and
        timepoints stay on one side of the validation split.
    seed
        Seeds the split, the augmentation, dropout and the batch order.
    config
        Optimisation settings; default :class:`FineTuneConfig`.

    Returns
    -------
    state_dict : dict of torch.Tensor
        The fine-tuned weights (best validation epoch).
    history : TrainingHistory
        Per-epoch training / validation losses and the validation AUC.
    """
    config = config or FineTuneConfig()
    patches = np.asarray(patches, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64)
    groups = np.asarray(groups)
    if not len(patches) == len(labels) == len(groups):
        raise TrainingError("patches, labels and groups must have the same length")
    if not set(np.unique(labels)) <= {0, 1}:
        raise TrainingError("PFS6 labels must be 0 or 1")
    train_idx, val_idx = validation_split(labels, groups, config.validation_fraction, seed)
    model = load_network(state_dict)
    freeze_for_fine_tuning(model)
    history = train_network(
        model,
        (patches[train_idx], labels[train_idx]),
        (patches[val_idx], labels[val_idx]),
        config.loop_config(),
        seed,
        description="fine-tuning CNN on PFS6",
    )
    for parameter in model.parameters():
        parameter.requires_grad = True
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history
