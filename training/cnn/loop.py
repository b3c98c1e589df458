"""The one training loop of the CNN, shared by pretraining and fine-tuning.

Reproducibility on CPU is a requirement (same seed, same weights), so every run
happens inside :func:`deterministic_torch`: a forked global RNG seeded from the
run's seed (dropout draws from it), ``torch.use_deterministic_algorithms(True)``
and a fixed thread count (oneDNN may sum in a different order with another
count). All other randomness - shuffling and augmentation - comes from one
explicitly seeded :class:`torch.Generator`. The caller's global torch state is
restored afterwards.

Augmentation is geometric only, because intensities carry meaning (HU): a
random in-plane rotation (any angle), a shift of up to a few pixels and a
left-right mirror, applied to all 5 slices alike with
:func:`torch.nn.functional.affine_grid` / ``grid_sample``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional

from icibenefit.errors import TrainingError
from icibenefit.pipeline.torch_threads import torch_threads


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation settings of one training run.

    ``patience`` None trains every epoch and keeps the last weights; a number
    stops after that many epochs without a lower validation loss and restores
    the best weights (early stopping).
    """

    epochs: int
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int | None = None
    augment: bool = True
    max_shift_px: float = 3.0
    num_threads: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.num_threads < 1:
            raise ValueError("epochs, batch_size and num_threads must be positive")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be positive and weight_decay non-negative")
        if self.patience is not None and self.patience < 1:
            raise ValueError("patience must be positive (or None to disable early stopping)")


@dataclass(frozen=True)
class EpochRecord:
    """Losses of one epoch (validation ones are None without a validation set)."""

    epoch: int
    train_loss: float
    validation_loss: float | None
    validation_auc: float | None


@dataclass
class TrainingHistory:
    """What a training run did: per-epoch losses and which epoch's weights were kept."""

    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for bundle manifests and reports)."""
        return {
            "epochs": [asdict(record) for record in self.epochs],
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> TrainingHistory:
        """Inverse of :meth:`as_dict`."""
        return cls(
            epochs=[EpochRecord(**record) for record in document["epochs"]],
            best_epoch=int(document["best_epoch"]),
            stopped_early=bool(document["stopped_early"]),
        )


@contextlib.contextmanager
def deterministic_torch(seed: int, num_threads: int) -> Iterator[None]:
    """Run a block with seeded, deterministic torch on a fixed number of threads."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]), torch_threads(num_threads):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)


def augment(batch: torch.Tensor, generator: torch.Generator, max_shift_px: float) -> torch.Tensor:
    """Randomly rotate, shift and mirror each patch (all slices of a patch alike)."""
    n, _, height, width = batch.shape
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift_px
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * mirror, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * mirror, cos
    theta[:, 0, 2] = shift[:, 0] * 2 / width  # affine_grid works in [-1, 1] coordinates
    theta[:, 1, 2] = shift[:, 1] * 2 / height
    grid = functional.affine_grid(theta, list(batch.shape), align_corners=False)
    return functional.grid_sample(batch, grid, padding_mode="border", align_corners=False)


def _class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency class weights, so the rarer class is not simply ignored."""
    counts = torch.bincount(labels, minlength=2).to(torch.float32)
    if torch.any(counts == 0):
        raise TrainingError("training labels need both classes")
    return counts.sum() / (2 * counts)


def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, batch_size: int
) -> tuple[float, float | None]:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in torch.split(x, batch_size)])
    loss = float(functional.cross_entropy(logits, y, weight=weights))
    labels = y.numpy()
    if len(np.unique(labels)) < 2:
        return loss, None
    probability = torch.softmax(logits, dim=1)[:, 1].numpy()
    return loss, float(roc_auc_score(labels, probability))


def train_network(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    config: LoopConfig,
    seed: int,
    description: str = "training CNN",
) -> TrainingHistory:
    """Train ``model`` in place on patches ``[n, 5, 47, 47]`` with 0/1 labels.

    Only parameters with ``requires_grad`` are optimised (Adam), so freezing is
    the caller's business. The loss is class-weighted cross-entropy with weights
    from the training labels, also used for the validation loss. With
    ``config.patience`` and a validation set, the weights of the epoch with the
    lowest validation loss are restored at the end.
    """
    x_train = torch.from_numpy(np.ascontiguousarray(train[0], dtype=np.float32))
    y_train = torch.from_numpy(np.asarray(train[1], dtype=np.int64))
    if len(x_train) != len(y_train) or len(x_train) == 0:
        raise TrainingError("training patches and labels must be non-empty and equally long")
    x_val = y_val = None
    if validation is not None:
        x_val = torch.from_numpy(np.ascontiguousarray(validation[0], dtype=np.float32))
        y_val = torch.from_numpy(np.asarray(validation[1], dtype=np.int64))
    weights = _class_weights(y_train)
    history = TrainingHistory()
    with deterministic_torch(seed, config.num_threads):
        generator = torch.Generator().manual_seed(seed)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        best_loss, best_state, stale = math.inf, None, 0
        steps = math.ceil(len(x_train) / config.batch_size)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("epoch {task.fields[epoch]} loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            disable=not config.progress,
            transient=True,
        ) as progress:
            task = progress.add_task(description, total=config.epochs * steps, epoch=0, loss="-")
            for epoch in range(1, config.epochs + 1):
                model.train()
                order = torch.randperm(len(x_train), generator=generator)
                total = 0.0
                for batch_index in torch.split(order, config.batch_size):
                    batch = x_train[batch_index]
                    if config.augment:
                        batch = augment(batch, generator, config.max_shift_px)
                    optimiser.zero_grad()
                    loss = functional.cross_entropy(
                        model(batch), y_train[batch_index], weight=weights
                    )
                    loss.backward()
                    optimiser.step()
                    total += loss.item() * len(batch_index)
                    progress.update(task, advance=1, epoch=epoch, loss=f"{loss.item():.3f}")
                val_loss = val_auc = None
                if x_val is not None and y_val is not None and len(x_val):
                    val_loss, val_auc = _evaluate(model, x_val, y_val, weights, config.batch_size)
                history.epochs.append(EpochRecord(epoch, total / len(x_train), val_loss, val_auc))
                if config.patience is None or val_loss is None:
                    history.best_epoch = epoch
                    continue
                if val_loss < best_loss:
                    best_loss, stale = val_loss, 0
                    best_state = copy.deepcopy(model.state_dict())
                    history.best_epoch = epoch
                else:
                    stale += 1
                    if stale >= config.patience:
                        history.stopped_early = epoch < config.epochs
                        break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    return history
