from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from icibenefit.errors import TrainingError
from icibenefit.training.evaluation.roc import (
    auc,
    auc_of_resamples,
    delong_test,
    percentile_interval,
    stratified_bootstrap_indices,
)


def _data(seed: int, n: int = 40, ties: bool = False) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    a = rng.normal(size=n) + y
    b = rng.normal(size=n) + 0.4 * y
    if ties:
        a, b = np.round(a), np.round(b * 2) / 2
    return y, a, b


def _delong_from_definition(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) with the O(m n) kernel psi, as an independent check of Sun & Xu."""
    cases, controls = y == 1, y == 0
    v10, v01, aucs = [], [], []
    for s in (a, b):
        psi = (s[cases][:, None] > s[controls][None, :]) + 0.5 * (
            s[cases][:, None] == s[controls][None, :]
        )
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.cov(v10), np.cov(v01)
    cov = s10 / cases.sum() + s01 / controls.sum()
    z = (aucs[0] - aucs[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return float(z), float(2 * norm.sf(abs(z)))


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, True), (2, True), (3, False)])
def test_delong_equals_the_original_definition(seed: int, ties: bool) -> None:
    y, a, b = _data(seed, ties=ties)
    result = delong_test(y, a, b)
    z, p = _delong_from_definition(y, a, b)
    assert result.z == pytest.approx(z, abs=1e-12)
    assert result.p == pytest.approx(p, abs=1e-12)
    assert result.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert result.auc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)


def test_delong_is_antisymmetric_and_undefined_for_identical_curves() -> None:
    y, a, b = _data(5)
    forward, backward = delong_test(y, a, b), delong_test(y, b, a)
    assert forward.z == pytest.approx(-backward.z)
    assert forward.p == pytest.approx(backward.p)
    same = delong_test(y, a, a * 2 + 1)  # same ranking -> same curve
    assert np.isnan(same.z)
    assert np.isnan(same.p)


def test_auc_is_never_flipped() -> None:
    y, a, _ = _data(6)
    assert auc(y, -a) == pytest.approx(1 - auc(y, a))
    assert auc(y, -a) < 0.5


def test_auc_needs_both_classes_and_finite_scores() -> None:
    with pytest.raises(TrainingError, match="both classes"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(TrainingError, match="finite"):
        auc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(TrainingError, match="0/1"):
        auc([0, 2, 1], [0.1, 0.2, 0.3])


def test_stratified_resamples_keep_class_counts_and_match_sklearn() -> None:
    y, a, _ = _data(7, ties=True)
    indices = stratified_bootstrap_indices(y, 30, np.random.default_rng(1))
    assert indices.shape == (30, y.size)
    assert (y[indices].sum(axis=1) == y.sum()).all()
    fast = auc_of_resamples(y, a, indices)
    slow = [roc_auc_score(y[row], a[row]) for row in indices]
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_same_seed_same_resamples() -> None:
    y, _, _ = _data(8)
    first = stratified_bootstrap_indices(y, 5, np.random.default_rng(3))
    again = stratified_bootstrap_indices(y, 5, np.random.default_rng(3))
    other = stratified_bootstrap_indices(y, 5, np.random.default_rng(4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_percentile_interval_is_r_type_7_and_skips_nan() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    low, high = percentile_interval(values)
    # R: quantile(c(1, 2, 3, 4), c(0.025, 0.975)) = 1.075, 3.925
    assert (low, high) == pytest.approx((1.075, 3.925))
