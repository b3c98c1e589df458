"""Survival analysis of predicted risk groups: Kaplan-Meier, log-rank, Cox HR, C-index.

Patients are split at the classification threshold (0.5) into a *high* group
(score >= threshold, i.e. high predicted probability of the endpoint's label 1)
and a *low* group. The hazard ratio is that of the high group versus the low one,
from a univariable Cox model with Efron ties (R ``coxph``'s default and
lifelines'); its interval is exp(beta +- z SE) with z = qnorm(0.975), as R's
``summary.coxph`` prints it (the paper's tables, which show negative lower bounds,
evidently used HR +- 1.96 SE on the ratio scale; we do not copy that). The log-rank
test is lifelines' ``logrank_test``, equal to R's ``survdiff``.

The C-index is lifelines' ``concordance_index`` of the continuous score against
survival time: the score is read as "higher = longer survival" because label 1
is the responder (event-free beyond the landmark). A model ranking patients
perfectly has C = 1, a reversed one C = 0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

from icibenefit.errors import TrainingError

Z_975 = float(norm.ppf(0.975))


@dataclass(frozen=True)
class SurvivalMetrics:
    """Risk-group statistics of one model for one time-to-event outcome.

    Any statistic that is undefined for the data (one group empty, no events in a
    group so the Cox model diverges) is NaN; the report prints it as "n/a".
    """

    n: int
    n_high: int
    events: int
    logrank_chi2: float
    logrank_p: float
    hr: float
    hr_ci: tuple[float, float]
    cox_p: float
    c_index: float


def check_survival(
    time: ArrayLike, event: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.int_]]:
    """Times (finite, non-negative) and event flags (0/1) of equal length."""
    times = np.asarray(time, dtype=float)
    events = np.asarray(event)
    if times.ndim != 1 or times.shape != events.shape:
        raise TrainingError("survival times and event flags must be 1-D and of equal length")
    if not np.isfinite(times).all() or (times < 0).any():
        raise TrainingError("survival times must be finite and non-negative")
    if not np.isin(events, (0, 1)).all():
        raise TrainingError("event flags must be 0/1")
    return times, events.astype(int)


def risk_groups(scores: ArrayLike, threshold: float) -> NDArray[np.int_]:
    """1 for the high-probability group (score >= threshold), 0 for the low one."""
    return (np.asarray(scores, dtype=float) >= threshold).astype(int)


def logrank(
    times: NDArray[np.float64], events: NDArray[np.int_], groups: NDArray[np.int_]
) -> tuple[float, float]:
    """Log-rank chi-square (1 df) and p between the two groups (NaN if one is empty)."""
    from lifelines.statistics import logrank_test

    high = groups == 1
    if high.all() or not high.any() or events.sum() == 0:
        return float("nan"), float("nan")
    result = logrank_test(times[high], times[~high], events[high], events[~high])
    return float(result.test_statistic), float(result.p_value)


def cox_high_vs_low(
    times: NDArray[np.float64], events: NDArray[np.int_], groups: NDArray[np.int_]
) -> tuple[float, tuple[float, float], float]:
    """HR of the high group, its Wald interval and Wald p from a univariable Cox model.

    Returns NaNs when the model is not estimable: a single group, or a group
    without events (beta diverges; R's coxph then warns and reports nonsense).
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    events_high = events[groups == 1].sum()
    events_low = events[groups == 0].sum()
    if groups.min() == groups.max() or events_high == 0 or events_low == 0:
        return float("nan"), (float("nan"), float("nan")), float("nan")
    frame = pd.DataFrame({"time": times, "event": events, "high": groups})
    fitter = CoxPHFitter()  # Efron ties, no penalty: R coxph's defaults
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # A tighter convergence criterion than lifelines' default so the estimate
            # agrees with R's coxph (eps = 1e-9) to well below 1e-6.
            fitter.fit(frame, "time", "event", fit_options={"precision": 1e-12})
    except ConvergenceError:
        return float("nan"), (float("nan"), float("nan")), float("nan")
    beta = float(fitter.params_["high"])
    se = float(fitter.standard_errors_["high"])
    p = float(2 * norm.sf(abs(beta / se)))
    # A separated or tiny group gives a huge SE: the bound is then honestly
    # infinite (reported as null), not an overflow to warn about.
    with np.errstate(over="ignore"):
        return (
            float(np.exp(beta)),
            (float(np.exp(beta - Z_975 * se)), float(np.exp(beta + Z_975 * se))),
            p,
        )


def c_index(times: NDArray[np.float64], events: NDArray[np.int_], scores: ArrayLike) -> float:
    """Lifelines' concordance index, scores read as "higher = longer survival"."""
    from lifelines.utils import concordance_index

    try:
        return float(concordance_index(times, np.asarray(scores, dtype=float), events))
    except ZeroDivisionError:  # no admissible pairs (e.g. no events)
        return float("nan")


def survival_metrics(
    time: ArrayLike, event: ArrayLike, scores: ArrayLike, threshold: float = 0.5
) -> SurvivalMetrics:
    """All risk-group statistics of one model for one outcome (see the module docstring)."""
    times, events = check_survival(time, event)
    values = np.asarray(scores, dtype=float)
    if values.shape != times.shape:
        raise TrainingError("one score per patient is needed for the survival analysis")
    groups = risk_groups(values, threshold)
    chi2, logrank_p = logrank(times, events, groups)
    hr, hr_ci, cox_p = cox_high_vs_low(times, events, groups)
    return SurvivalMetrics(
        n=int(times.size),
        n_high=int(groups.sum()),
        events=int(events.sum()),
        logrank_chi2=chi2,
        logrank_p=logrank_p,
        hr=hr,
        hr_ci=hr_ci,
        cox_p=cox_p,
        c_index=c_index(times, events, values),
    )
