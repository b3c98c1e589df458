from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import chi2
from sklearn.metrics import brier_score_loss

from icibenefit.training.evaluation.calibration import (
    calibration_metrics,
    calibration_slope_intercept,
    hosmer_lemeshow,
)


def _data(seed: int, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    y = (rng.uniform(size=n) < p**1.4).astype(int)
    return y, p


def _hoslem_by_hand(y: np.ndarray, p: np.ndarray, g: int) -> tuple[float, float, int]:
    """ResourceSelection::hoslem.test (0.3-6) written out literally, one group at a time."""
    cuts = np.unique(np.quantile(p, np.linspace(0, 1, g + 1)))
    statistic, groups = 0.0, 0
    for i in range(1, cuts.size):
        lower, upper = cuts[i - 1], cuts[i]
        member = (p > lower) & (p <= upper) if i > 1 else (p >= lower) & (p <= upper)
        if not member.any():
            continue
        o1, e1 = y[member].sum(), p[member].sum()
        o0, e0 = member.sum() - o1, member.sum() - e1
        statistic += (o1 - e1) ** 2 / e1 + (o0 - e0) ** 2 / e0
        groups += 1
    return statistic, float(chi2.sf(statistic, groups - 2)), groups - 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hosmer_lemeshow_equals_hand_computation(seed: int) -> None:
    y, p = _data(seed)
    if seed == 2:
        p = np.clip(np.round(p, 1), 0.1, 0.9)  # heavy ties: duplicate cut points merge
    result = hosmer_lemeshow(y, p, g=10)
    statistic, p_value, df = _hoslem_by_hand(y, p, 10)
    assert result.chi2 == pytest.approx(statistic, rel=1e-12)
    assert result.p == pytest.approx(p_value, rel=1e-12)
    assert result.df == df == (6 if seed == 2 else 8)  # 9 distinct cut points -> 8 groups


def test_brier_equals_sklearn_and_curve_is_within_unit_square() -> None:
    y, p = _data(3)
    metrics = calibration_metrics(y, p)
    assert metrics.brier == pytest.approx(brier_score_loss(y, p), abs=1e-15)
    assert len(metrics.curve_predicted) == len(metrics.curve_observed) > 3
    assert all(0 <= v <= 1 for v in metrics.curve_observed)


def test_slope_and_intercept_maximise_the_logistic_likelihood() -> None:
    y, p = _data(4)
    x = np.log(p / (1 - p))

    def negative_log_likelihood(theta: np.ndarray) -> float:
        eta = theta[0] + theta[1] * x
        return float(np.sum(np.logaddexp(0, eta) - y * eta))

    reference = minimize(negative_log_likelihood, np.zeros(2), method="BFGS", tol=1e-12).x
    slope, intercept = calibration_slope_intercept(y, p)
    assert intercept == pytest.approx(reference[0], abs=1e-5)
    assert slope == pytest.approx(reference[1], abs=1e-5)


def test_well_calibrated_model_has_slope_near_one() -> None:
    rng = np.random.default_rng(5)
    p = rng.uniform(0.05, 0.95, 4000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(1, abs=0.1)
    assert intercept == pytest.approx(0, abs=0.1)
