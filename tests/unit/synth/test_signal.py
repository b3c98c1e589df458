"""The response latent reaches the observables, scaled by ``signal``.

Uses the generator's pure functions on a few hundred simulated patients (no
DICOM), so it runs in well under a second; the end-to-end version on written
files is in tests/integration/synth.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import mannwhitneyu

from icibenefit.synth.outcomes import MONTH_DAYS, draw_course


def _simulate(signal: float, n: int = 400) -> dict[str, np.ndarray]:
    courses = [draw_course(np.random.default_rng([123, i]), signal) for i in range(n)]
    pfs = np.array([c.outcomes.pfs_months for c in courses])
    event = np.array([c.outcomes.pfs_event for c in courses])
    return {
        "known": (pfs > 6) | event,
        "responder": pfs > 6,
        "volume_change": np.array([c.log_volume_rate * 50 / MONTH_DAYS for c in courses]),
        "nlr_change": np.array([c.nlr_log_change[1] for c in courses]),
        "censored": ~event,
        "os_censored": np.array([not c.outcomes.os_event for c in courses]),
        "pfs_not_after_os": np.array(
            [c.outcomes.pfs_months <= c.outcomes.os_months for c in courses]
        ),
    }


def test_responders_shrink_and_lower_nlr() -> None:
    sim = _simulate(1.0)
    known, responder = sim["known"], sim["responder"]
    for name in ("volume_change", "nlr_change"):
        values = sim[name][known]
        result = mannwhitneyu(
            values[responder[known]], values[~responder[known]], alternative="less"
        )
        assert result.pvalue < 1e-4, name


def test_zero_signal_carries_no_information() -> None:
    sim = _simulate(0.0)
    known, responder = sim["known"], sim["responder"]
    values = sim["volume_change"][known]
    result = mannwhitneyu(values[responder[known]], values[~responder[known]])
    assert result.pvalue > 0.01


def test_outcome_distribution_is_realistic() -> None:
    sim = _simulate(1.0, n=1000)
    responder_fraction = sim["responder"][sim["known"]].mean()
    assert 0.35 <= responder_fraction <= 0.50
    assert 0.12 <= sim["censored"].mean() <= 0.25
    assert 0.15 <= sim["os_censored"].mean() <= 0.30
    assert sim["pfs_not_after_os"].all()


def _auc_of_observables(signal: float) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    sim = _simulate(signal, n=1500)
    known = sim["known"]
    features = np.column_stack([sim["volume_change"], sim["nlr_change"]])[known]
    labels = sim["responder"][known]
    scores = cross_val_predict(LogisticRegression(), features, labels, cv=3, method="predict_proba")
    return float(roc_auc_score(labels, scores[:, 1]))


def test_signal_tunes_predictability() -> None:
    none, default, strong = (_auc_of_observables(s) for s in (0.0, 1.0, 2.0))
    assert none < 0.6
    assert 0.7 <= default <= 0.85  # the target range for a good model
    assert strong > default + 0.03
