"""Calibration of predicted probabilities (seed 2): curve, Brier, slope/intercept, HL test.

- Calibration curve: scikit-learn's ``calibration_curve`` (quantile bins).
- Brier score: scikit-learn's ``brier_score_loss``.
- Calibration slope and intercept: the logistic recalibration model
  ``logit P(y = 1) = a + b * logit(p)`` fitted by unpenalised maximum likelihood
  (R: ``glm(y ~ qlogis(p), family = binomial)``). b = 1 and a = 0 for perfect
  calibration; b < 1 means over-fitted, too extreme predictions.
- Hosmer-Lemeshow with g groups: no Python library we use (scikit-learn, scipy,
  lifelines, statsmodels is not a dependency) has it, so it is written here from
  the definition that R's ``ResourceSelection::hoslem.test`` implements: groups
  cut at the type-7 quantiles of p (duplicate cut points merged, intervals closed
  on the right, the lowest included), chi-square = sum over groups and both
  outcomes of (observed - expected)^2 / expected, with G - 2 degrees of freedom
  where G is the number of groups actually formed (ResourceSelection 0.3-6; it
  equals g unless tied probabilities merge cut points).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logit
from scipy.stats import chi2

from icibenefit.errors import TrainingError
from icibenefit.training.evaluation.roc import check_binary

#: Probabilities are clipped away from 0 and 1 before logit(p) so a model that
#: outputs exactly 0 or 1 (a random forest often does) still has a finite slope.
PROBABILITY_EPS = 1e-6


@dataclass(frozen=True)
class HosmerLemeshow:
    """Hosmer-Lemeshow goodness-of-fit test."""

    chi2: float
    df: int
    p: float


@dataclass(frozen=True)
class CalibrationMetrics:
    """Calibration summary of one model's probabilities."""

    brier: float
    slope: float
    intercept: float
    hosmer_lemeshow: HosmerLemeshow
    curve_predicted: tuple[float, ...]
    curve_observed: tuple[float, ...]


def check_probabilities(p: ArrayLike, n: int) -> NDArray[np.float64]:
    """Probabilities as a float array of length ``n`` within [0, 1]."""
    values = np.asarray(p, dtype=float)
    if values.shape != (n,) or not np.isfinite(values).all():
        raise TrainingError(f"probabilities must be {n} finite numbers")
    if (values < 0).any() or (values > 1).any():
        raise TrainingError("calibration needs probabilities in [0, 1]")
    return values


def hosmer_lemeshow(y: ArrayLike, p: ArrayLike, g: int = 10) -> HosmerLemeshow:
    """Hosmer-Lemeshow test as ``ResourceSelection::hoslem.test(y, p, g)`` defines it.

    The p-value is NaN when fewer than three groups can be formed (df < 1).
    """
    labels = np.asarray(y, dtype=float)
    probabilities = check_probabilities(p, labels.size)
    if g < 3:
        raise TrainingError("Hosmer-Lemeshow needs g >= 3 groups")
    cuts = np.unique(np.quantile(probabilities, np.linspace(0, 1, g + 1)))
    # cut(..., include.lowest = TRUE): intervals (c[i-1], c[i]], the first closed.
    group = np.clip(np.searchsorted(cuts, probabilities, side="left"), 1, None) - 1
    n_groups = max(cuts.size - 1, 1)
    observed_1 = np.bincount(group, weights=labels, minlength=n_groups)
    expected_1 = np.bincount(group, weights=probabilities, minlength=n_groups)
    size = np.bincount(group, minlength=n_groups).astype(float)
    used = size > 0
    observed = np.concatenate([size[used] - observed_1[used], observed_1[used]])
    expected = np.concatenate([size[used] - expected_1[used], expected_1[used]])
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = float(np.sum((observed - expected) ** 2 / expected))
    df = int(used.sum()) - 2
    p = float(chi2.sf(statistic, df)) if df >= 1 else float("nan")
    return HosmerLemeshow(chi2=statistic, df=df, p=p)


def calibration_slope_intercept(y: ArrayLike, p: ArrayLike) -> tuple[float, float]:
    """Slope and intercept of the logistic recalibration of ``logit(p)``."""
    from sklearn.linear_model import LogisticRegression

    labels = check_binary(y)
    probabilities = check_probabilities(p, labels.size)
    x = logit(np.clip(probabilities, PROBABILITY_EPS, 1 - PROBABILITY_EPS)).reshape(-1, 1)
    # C = inf: no penalty (the spelling scikit-learn 1.8 asks for instead of penalty=None);
    # 1.8 then warns that C is ignored, which is exactly what we want.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting penalty=None")
        model = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def calibration_metrics(
    y: ArrayLike, p: ArrayLike, n_bins: int = 10, hl_groups: int = 10
) -> CalibrationMetrics:
    """Brier score, recalibration slope/intercept, HL test and the calibration curve."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    labels = check_binary(y)
    probabilities = check_probabilities(p, labels.size)
    observed, predicted = calibration_curve(
        labels, probabilities, n_bins=n_bins, strategy="quantile"
    )
    slope, intercept = calibration_slope_intercept(labels, probabilities)
    return CalibrationMetrics(
        brier=float(brier_score_loss(labels, probabilities)),
        slope=slope,
        intercept=intercept,
        hosmer_lemeshow=hosmer_lemeshow(labels, probabilities, hl_groups),
        curve_predicted=tuple(float(v) for v in predicted),
        curve_observed=tuple(float(v) for v in observed),
    )
