"""AUC, its stratified bootstrap interval, and DeLong's test for paired AUCs.

Conventions fixed by METHOD.md so that results equal R pROC's
``roc(y, s, levels = c(0, 1), direction = "<")``: label 1 is the case class and
a *higher* score means "more likely a case". A curve is never flipped: an AUC
below 0.5 is reported as such.

scikit-learn, scipy and lifelines were checked: none implements DeLong's test,
so :func:`delong_test` implements the fast algorithm of Sun & Xu (2014),
"Fast implementation of DeLong's algorithm for comparing the areas under
correlated receiver operating characteristic curves", IEEE SPL 21(11), by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from icibenefit.errors import TrainingError


def check_binary(y: ArrayLike) -> NDArray[np.int_]:
    """Labels as an int array of 0/1 with both classes present (an AUC needs both)."""
    labels = np.asarray(y)
    if labels.ndim != 1 or not np.isin(labels, (0, 1)).all():
        raise TrainingError("outcome labels must be a 1-D array of 0/1")
    labels = labels.astype(int)
    if labels.min() == labels.max():
        raise TrainingError("an AUC needs both classes; only one is present")
    return labels


def check_scores(scores: ArrayLike, n: int) -> NDArray[np.float64]:
    """Scores as a finite float array of length ``n``."""
    values = np.asarray(scores, dtype=float)
    if values.shape != (n,) or not np.isfinite(values).all():
        raise TrainingError(f"scores must be {n} finite numbers, one per patient")
    return values


def auc(y: ArrayLike, scores: ArrayLike) -> float:
    """Point AUC (ties count one half), equal to pROC with ``direction = "<"``."""
    labels = check_binary(y)
    return float(roc_auc_score(labels, check_scores(scores, labels.size)))


def stratified_bootstrap_indices(
    y: ArrayLike, n_boot: int, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Row indices of ``n_boot`` resamples, each keeping the number of cases and controls.

    Cases and controls are resampled separately, as pROC's ``boot.stratified = TRUE``
    does, so every resample has both classes and an AUC. All models are evaluated on
    the same resamples, which keeps their intervals comparable.
    """
    labels = check_binary(y)
    if n_boot < 1:
        raise TrainingError("n_boot must be at least 1")
    cases = np.flatnonzero(labels == 1)
    controls = np.flatnonzero(labels == 0)
    return np.concatenate(
        [
            rng.choice(cases, size=(n_boot, cases.size), replace=True),
            rng.choice(controls, size=(n_boot, controls.size), replace=True),
        ],
        axis=1,
    )


def auc_of_resamples(
    y: NDArray[np.int_], scores: NDArray[np.float64], indices: NDArray[np.intp]
) -> NDArray[np.float64]:
    """AUC of every bootstrap resample at once, through the Mann-Whitney rank formula."""
    labels = y[indices]
    ranks = rankdata(scores[indices], axis=1)  # mid-ranks: ties count one half
    n_cases = labels.sum(axis=1)
    n_controls = labels.shape[1] - n_cases
    rank_sum = (ranks * labels).sum(axis=1)
    return np.asarray(
        (rank_sum - n_cases * (n_cases + 1) / 2) / (n_cases * n_controls), dtype=float
    )


def percentile_interval(values: NDArray[np.float64], level: float = 0.95) -> tuple[float, float]:
    """Percentile interval (R's default type-7 quantiles), ignoring undefined resamples."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return (float(low), float(high))


@dataclass(frozen=True)
class DelongResult:
    """DeLong's paired test of two AUCs on the same patients."""

    auc_a: float
    auc_b: float
    z: float
    p: float


def _midranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mid-ranks along the last axis (Sun & Xu's T_X, T_Y and T_Z)."""
    return np.asarray(rankdata(values, axis=-1), dtype=float)


def delong_covariance(
    y: ArrayLike, score_matrix: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """AUCs of k correlated scores and their DeLong covariance matrix (Sun & Xu 2014).

    Parameters
    ----------
    y
        0/1 labels, length n.
    score_matrix
        Shape (k, n): one row of scores per model.

    Returns
    -------
    aucs, covariance
        Shape (k,) and (k, k).
    """
    labels = check_binary(y)
    scores = np.atleast_2d(np.asarray(score_matrix, dtype=float))
    if scores.shape[1] != labels.size or not np.isfinite(scores).all():
        raise TrainingError("score matrix must have one finite score per patient")
    positives = scores[:, labels == 1]
    negatives = scores[:, labels == 0]
    m, n = positives.shape[1], negatives.shape[1]
    t_x = _midranks(positives)
    t_y = _midranks(negatives)
    t_z = _midranks(np.concatenate([positives, negatives], axis=1))
    aucs = (t_z[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    # Structural components V10 (per case) and V01 (per control).
    v10 = (t_z[:, :m] - t_x) / n
    v01 = 1.0 - (t_z[:, m:] - t_y) / m
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


def delong_test(y: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike) -> DelongResult:
    """Two-sided DeLong test of AUC(a) = AUC(b), equal to pROC's paired ``roc.test``.

    When the two curves are identical the variance of the difference is zero and
    the test is undefined: z and p are NaN (pROC refuses such a comparison too).
    """
    aucs, cov = delong_covariance(y, np.vstack([scores_a, scores_b]))
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    difference = aucs[0] - aucs[1]
    if variance <= 0:
        return DelongResult(float(aucs[0]), float(aucs[1]), float("nan"), float("nan"))
    z = difference / np.sqrt(variance)
    return DelongResult(float(aucs[0]), float(aucs[1]), float(z), float(2 * norm.sf(abs(z))))
