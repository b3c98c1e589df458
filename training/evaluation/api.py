"""The paper's evaluation of several models' predictions on one endpoint.

:func:`evaluate_models` is the one entry point the training code and the
``icibenefit evaluate`` command share, so a report written after training and
one written from a predictions CSV can never disagree. It returns an
:class:`EvaluationResult` that :func:`~icibenefit.training.evaluation.report.write_report`
turns into metrics.json, Markdown/CSV tables and plots.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from icibenefit.errors import TrainingError
from icibenefit.training.evaluation.calibration import CalibrationMetrics, calibration_metrics
from icibenefit.training.evaluation.classification import (
    DEFAULT_THRESHOLD,
    THRESHOLD_METRICS,
    DiscriminationMetrics,
    bootstrap_indices,
    discrimination_metrics,
)
from icibenefit.training.evaluation.roc import DelongResult, check_binary, check_scores, delong_test
from icibenefit.training.evaluation.survival import (
    SurvivalMetrics,
    check_survival,
    survival_metrics,
)

DEFAULT_N_BOOT = 1000
DEFAULT_SEED = 20231  # any fixed value; the paper does not give one
SURVIVAL_OUTCOMES = ("pfs", "os")


@dataclass(frozen=True)
class ModelLabel:
    """How a model is named in the tables: seed 1's "Model" and "Features" columns."""

    model: str
    features: str = ""


@dataclass(frozen=True)
class SurvivalData:
    """Time-to-event outcome (months, 1 = event) of the evaluated patients.

    ``NaN`` times mark patients without follow-up for this outcome; they are left
    out of its survival statistics only.
    """

    time: NDArray[np.float64]
    event: NDArray[np.float64]

    @classmethod
    def of(cls, time: ArrayLike, event: ArrayLike) -> SurvivalData:
        """Build from any array-likes (lists, pandas Series)."""
        return cls(np.asarray(time, dtype=float), np.asarray(event, dtype=float))


@dataclass(frozen=True)
class ModelEvaluation:
    """Every statistic of one model."""

    label: ModelLabel
    discrimination: DiscriminationMetrics
    survival: dict[str, SurvivalMetrics]
    calibration: CalibrationMetrics | None


@dataclass(frozen=True)
class PairedComparison:
    """DeLong's test between models ``a`` and ``b``."""

    a: str
    b: str
    result: DelongResult


@dataclass(frozen=True)
class EvaluationResult:
    """The evaluation of several models on one endpoint, plus the inputs the plots need."""

    endpoint: str
    n: int
    n_boot: int
    seed: int
    threshold: float
    models: dict[str, ModelEvaluation]
    delong: list[PairedComparison]
    y: NDArray[np.int_] = field(repr=False)
    scores: dict[str, NDArray[np.float64]] = field(repr=False)
    survival: dict[str, SurvivalData] = field(repr=False)

    def comparison(self, a: str, b: str) -> PairedComparison:
        """The DeLong comparison of models ``a`` and ``b`` (in either order)."""
        for pair in self.delong:
            if {pair.a, pair.b} == {a, b}:
                return pair
        raise TrainingError(f"no DeLong comparison between {a!r} and {b!r}")

    def metrics_json(self) -> dict[str, Any]:
        """The ``metrics.json`` document, exactly in issue 7's schema (NaN -> null)."""
        models: dict[str, Any] = {}
        for name, evaluation in self.models.items():
            d = evaluation.discrimination
            entry: dict[str, Any] = {"auc": _num(d.auc.value), "auc_ci": _pair(d.auc.ci)}
            for metric in THRESHOLD_METRICS:
                estimate = getattr(d, metric)
                entry[metric] = _num(estimate.value)
                entry[f"{metric}_ci"] = _pair(estimate.ci)
            entry["survival"] = {
                outcome: {
                    "logrank_chi2": _num(s.logrank_chi2),
                    "logrank_p": _num(s.logrank_p),
                    "hr": _num(s.hr),
                    "hr_ci": _pair(s.hr_ci),
                    "cox_p": _num(s.cox_p),
                    "c_index": _num(s.c_index),
                }
                for outcome, s in evaluation.survival.items()
            }
            models[name] = entry
        return {
            "endpoint": self.endpoint,
            "n": self.n,
            "models": models,
            "delong": [
                {
                    "a": pair.a,
                    "b": pair.b,
                    "auc_a": _num(pair.result.auc_a),
                    "auc_b": _num(pair.result.auc_b),
                    "z": _num(pair.result.z),
                    "p": _num(pair.result.p),
                }
                for pair in self.delong
            ],
        }

    def details_json(self) -> dict[str, Any]:
        """What metrics.json's fixed schema has no room for: settings, group sizes, calibration."""
        return {
            "endpoint": self.endpoint,
            "n": self.n,
            "n_cases": int(self.y.sum()),
            "n_boot": self.n_boot,
            "seed": self.seed,
            "threshold": self.threshold,
            "models": {
                name: {
                    "model": e.label.model,
                    "features": e.label.features,
                    "survival_groups": {
                        outcome: {"n": s.n, "n_high": s.n_high, "events": s.events}
                        for outcome, s in e.survival.items()
                    },
                    "calibration": None
                    if e.calibration is None
                    else {
                        "brier": _num(e.calibration.brier),
                        "slope": _num(e.calibration.slope),
                        "intercept": _num(e.calibration.intercept),
                        "hosmer_lemeshow": {
                            "chi2": _num(e.calibration.hosmer_lemeshow.chi2),
                            "df": e.calibration.hosmer_lemeshow.df,
                            "p": _num(e.calibration.hosmer_lemeshow.p),
                        },
                        "curve": {
                            "predicted": list(e.calibration.curve_predicted),
                            "observed": list(e.calibration.curve_observed),
                        },
                    },
                }
                for name, e in self.models.items()
            },
        }


def _num(value: float) -> float | None:
    """JSON has no NaN or infinity: an undefined or unbounded statistic is null."""
    return float(value) if math.isfinite(value) else None


def _pair(values: tuple[float, float]) -> list[float | None]:
    return [_num(values[0]), _num(values[1])]


def _survival_inputs(
    survival: Mapping[str, SurvivalData | tuple[ArrayLike, ArrayLike]] | None, n: int
) -> dict[str, SurvivalData]:
    result: dict[str, SurvivalData] = {}
    for outcome, data in (survival or {}).items():
        data = data if isinstance(data, SurvivalData) else SurvivalData.of(*data)
        if data.time.shape != (n,) or data.event.shape != (n,):
            raise TrainingError(f"survival outcome {outcome!r} needs one value per patient")
        result[outcome] = data
    return result


def evaluate_models(
    y: ArrayLike,
    scores: Mapping[str, ArrayLike],
    *,
    endpoint: str,
    survival: Mapping[str, SurvivalData | tuple[ArrayLike, ArrayLike]] | None = None,
    labels: Mapping[str, ModelLabel] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    threshold: float = DEFAULT_THRESHOLD,
    delong_pairs: Sequence[tuple[str, str]] | None = None,
) -> EvaluationResult:
    """Evaluate every model as seed 1 does (Tables 2-6), plus seed 2's calibration.

    Parameters
    ----------
    y
        0/1 endpoint labels of the test patients (1 = responder / event-free at the
        landmark, the class the scores predict).
    scores
        Model name -> predicted probability of label 1, one per patient, same order as ``y``.
    endpoint
        Endpoint name written into the outputs (e.g. ``"pfs6"``).
    survival
        Outcome name (``"pfs"``, ``"os"``) -> (time in months, event 0/1) for the
        Kaplan-Meier, log-rank, Cox and C-index analysis of the risk groups.
    labels
        Model name -> :class:`ModelLabel` for the tables (default: the name, no features).
    n_boot, seed
        Number of stratified bootstrap resamples and the seed that draws them;
        the same resamples serve every model and metric.
    threshold
        Probability at or above which a patient is predicted positive / high group.
    delong_pairs
        Model pairs to compare with DeLong's test (default: every pair, in input order).

    Returns
    -------
    EvaluationResult
        Write it with :func:`~icibenefit.training.evaluation.report.write_report`, or
        read ``result.metrics_json()``.

    Raises
    ------
    TrainingError
        On labels with one class only, missing or non-finite scores, unknown models in
        ``delong_pairs`` or survival data of the wrong length.
    """
    labels_array = check_binary(y)
    n = labels_array.size
    if not scores:
        raise TrainingError("no model scores to evaluate")
    score_arrays = {name: check_scores(values, n) for name, values in scores.items()}
    survival_data = _survival_inputs(survival, n)
    indices = bootstrap_indices(labels_array, n_boot, seed)

    models: dict[str, ModelEvaluation] = {}
    for name, values in score_arrays.items():
        survival_results: dict[str, SurvivalMetrics] = {}
        for outcome, data in survival_data.items():
            known = np.isfinite(data.time) & np.isfinite(data.event)
            times, events = check_survival(data.time[known], data.event[known])
            if times.size:
                survival_results[outcome] = survival_metrics(
                    times, events, values[known], threshold
                )
        probabilities = bool(((values >= 0) & (values <= 1)).all())
        models[name] = ModelEvaluation(
            label=(labels or {}).get(name, ModelLabel(name)),
            discrimination=discrimination_metrics(labels_array, values, indices, threshold),
            survival=survival_results,
            calibration=calibration_metrics(labels_array, values) if probabilities else None,
        )

    pairs = (
        list(delong_pairs)
        if delong_pairs is not None
        else list(itertools.combinations(score_arrays, 2))
    )
    comparisons = []
    for a, b in pairs:
        if a not in score_arrays or b not in score_arrays:
            raise TrainingError(f"DeLong pair ({a!r}, {b!r}) names an unknown model")
        comparisons.append(
            PairedComparison(a, b, delong_test(labels_array, score_arrays[a], score_arrays[b]))
        )
    return EvaluationResult(
        endpoint=endpoint,
        n=n,
        n_boot=n_boot,
        seed=seed,
        threshold=threshold,
        models=models,
        delong=comparisons,
        y=labels_array,
        scores=score_arrays,
        survival=survival_data,
    )
