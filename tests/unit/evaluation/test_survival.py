from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index

from icibenefit.errors import TrainingError
from icibenefit.training.evaluation.survival import survival_metrics


def test_equals_lifelines_on_rossi() -> None:
    rossi = load_rossi()
    score = 1 / (1 + np.exp(-(rossi["age"] - 24) / 4))  # older -> "high" group
    result = survival_metrics(rossi["week"], rossi["arrest"], score)
    high = score >= 0.5

    reference = logrank_test(
        rossi["week"][high], rossi["week"][~high], rossi["arrest"][high], rossi["arrest"][~high]
    )
    assert result.logrank_chi2 == pytest.approx(reference.test_statistic, rel=1e-9)
    assert result.logrank_p == pytest.approx(reference.p_value, rel=1e-9)

    cox = CoxPHFitter().fit(
        pd.DataFrame({"t": rossi["week"], "e": rossi["arrest"], "g": high.astype(int)}), "t", "e"
    )
    summary = cox.summary.loc["g"]
    assert result.hr == pytest.approx(summary["exp(coef)"], rel=1e-5)
    assert result.hr_ci[0] == pytest.approx(summary["exp(coef) lower 95%"], rel=1e-5)
    assert result.hr_ci[1] == pytest.approx(summary["exp(coef) upper 95%"], rel=1e-5)
    assert result.cox_p == pytest.approx(summary["p"], abs=1e-6)  # R agreement: integration
    assert result.c_index == pytest.approx(
        concordance_index(rossi["week"], score, rossi["arrest"]), abs=1e-12
    )
    assert result.n_high == int(high.sum())
    assert result.hr < 1  # older prisoners are re-arrested later


def test_single_group_or_no_events_gives_nan_not_an_error() -> None:
    times = np.array([1.0, 2, 3, 4, 5, 6])
    events = np.array([1, 0, 1, 1, 0, 1])
    one_group = survival_metrics(times, events, np.full(6, 0.9))
    assert np.isnan(one_group.logrank_p)
    assert np.isnan(one_group.hr)
    assert 0 <= one_group.c_index <= 1
    no_events_high = survival_metrics(times, np.array([0, 0, 0, 1, 1, 1]), [0.9] * 3 + [0.1] * 3)
    assert np.isnan(no_events_high.hr)
    assert not np.isnan(no_events_high.logrank_chi2)


def test_rejects_bad_survival_input() -> None:
    with pytest.raises(TrainingError, match="non-negative"):
        survival_metrics([1.0, -2.0], [1, 0], [0.2, 0.8])
    with pytest.raises(TrainingError, match="0/1"):
        survival_metrics([1.0, 2.0], [1, 2], [0.2, 0.8])
