"""Threshold metrics (ACC, SENS, SPEC, PREC, bACC) and bootstrap intervals for all metrics.

A patient is predicted positive when its score is at least the threshold (0.5 in
the paper). The metrics are computed from confusion counts, vectorised over the
bootstrap resamples; they equal scikit-learn's ``accuracy_score``,
``recall_score``, ``precision_score`` and ``balanced_accuracy_score`` (the unit
tests check this). Precision is undefined (NaN) when nobody is predicted positive,
where scikit-learn would silently report 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from icibenefit.training.evaluation.roc import (
    auc,
    auc_of_resamples,
    check_binary,
    check_scores,
    percentile_interval,
    stratified_bootstrap_indices,
)

DEFAULT_THRESHOLD = 0.5
THRESHOLD_METRICS = ("acc", "sens", "spec", "prec", "bacc")


def threshold_metrics(
    y: NDArray[np.int_], predicted: NDArray[np.bool_]
) -> dict[str, NDArray[np.float64]]:
    """ACC, SENS, SPEC, PREC and bACC along the last axis of 0/1 labels and predictions.

    Works on one sample (1-D) or on a stack of bootstrap resamples (2-D).
    """
    positive = y == 1
    tp = np.sum(predicted & positive, axis=-1)
    tn = np.sum(~predicted & ~positive, axis=-1)
    fp = np.sum(predicted & ~positive, axis=-1)
    fn = np.sum(~predicted & positive, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        return {
            "acc": (tp + tn) / y.shape[-1],
            "sens": sens,
            "spec": spec,
            "prec": tp / (tp + fp),
            "bacc": (sens + spec) / 2,
        }


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% bootstrap percentile interval."""

    value: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class DiscriminationMetrics:
    """AUC and the threshold metrics of one model, each with its interval."""

    auc: Estimate
    acc: Estimate
    sens: Estimate
    spec: Estimate
    prec: Estimate
    bacc: Estimate
    threshold: float


def discrimination_metrics(
    y: ArrayLike,
    scores: ArrayLike,
    indices: NDArray[np.intp],
    threshold: float = DEFAULT_THRESHOLD,
) -> DiscriminationMetrics:
    """Point metrics and percentile intervals over the given bootstrap resamples.

    Parameters
    ----------
    y, scores
        Labels (0/1) and predicted probabilities of label 1.
    indices
        Resample row indices from
        :func:`~icibenefit.training.evaluation.roc.stratified_bootstrap_indices`;
        pass the same indices for every model so their intervals are paired.
    threshold
        Scores at or above it count as predicted positive.
    """
    labels = check_binary(y)
    values = check_scores(scores, labels.size)
    point = threshold_metrics(labels, values >= threshold)
    resampled = threshold_metrics(labels[indices], values[indices] >= threshold)
    estimates = {
        name: Estimate(float(point[name]), percentile_interval(resampled[name]))
        for name in THRESHOLD_METRICS
    }
    auc_estimate = Estimate(
        auc(labels, values), percentile_interval(auc_of_resamples(labels, values, indices))
    )
    return DiscriminationMetrics(auc=auc_estimate, threshold=threshold, **estimates)


def bootstrap_indices(y: ArrayLike, n_boot: int, seed: int) -> NDArray[np.intp]:
    """Seeded stratified resamples shared by all models of one evaluation."""
    return stratified_bootstrap_indices(y, n_boot, np.random.default_rng(seed))
