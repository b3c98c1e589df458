"""ROC, Kaplan-Meier and calibration plots as PNG.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot),
so plotting never depends on a display or touches global pyplot state in the
worker processes of the service.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from icibenefit.training.evaluation.api import EvaluationResult
from icibenefit.training.evaluation.survival import risk_groups

DPI = 120


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_roc(result: EvaluationResult, path: Path) -> Path:
    """All models' ROC curves on one chart, AUC and 95% CI in the legend."""
    from sklearn.metrics import roc_curve

    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.add_subplot()
    for name, scores in result.scores.items():
        fpr, tpr, _ = roc_curve(result.y, scores)
        estimate = result.models[name].discrimination.auc
        # Straight segments between ROC points: tied scores give the diagonal pieces.
        ax.plot(
            fpr,
            tpr,
            label=f"{name}: {estimate.value:.3f} [{estimate.ci[0]:.3f},{estimate.ci[1]:.3f}]",
        )
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(
        xlabel="1 - specificity",
        ylabel="Sensitivity",
        title=f"ROC, {result.endpoint.upper()} (n = {result.n})",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize="small", title="AUC [95% CI]")
    return _save(figure, path)


def plot_kaplan_meier(result: EvaluationResult, outcome: str, path: Path) -> Path:
    """One panel per model: KM curves of the high and low predicted groups."""
    from lifelines import KaplanMeierFitter

    data = result.survival[outcome]
    known = np.isfinite(data.time) & np.isfinite(data.event)
    names = list(result.scores)
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(4.5 * columns, 3.8 * rows), layout="constrained")
    for position, name in enumerate(names, start=1):
        ax = figure.add_subplot(rows, columns, position)
        groups = risk_groups(result.scores[name][known], result.threshold)
        for value, label in ((1, "high probability"), (0, "low probability")):
            members = groups == value
            if not members.any():
                continue
            fitter = KaplanMeierFitter().fit(data.time[known][members], data.event[known][members])
            ax.step(
                fitter.timeline,
                fitter.survival_function_.to_numpy()[:, 0],
                where="post",
                label=f"{label} (n = {int(members.sum())})",
            )
        metrics = result.models[name].survival.get(outcome)
        p = "n/a" if metrics is None or np.isnan(metrics.logrank_p) else f"{metrics.logrank_p:.3g}"
        ax.set(
            title=f"{name}\nlog-rank p = {p}",
            xlabel="Months",
            ylabel=f"{outcome.upper()} probability",
            ylim=(0, 1.02),
        )
        ax.legend(fontsize="small")
    figure.suptitle(
        f"Kaplan-Meier {outcome.upper()} by predicted group ({result.endpoint.upper()})"
    )
    return _save(figure, path)


def plot_calibration(result: EvaluationResult, path: Path) -> Path:
    """Reliability curves (quantile bins) of every model that outputs probabilities."""
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.add_subplot()
    for name, evaluation in result.models.items():
        c = evaluation.calibration
        if c is None:
            continue
        ax.plot(
            c.curve_predicted,
            c.curve_observed,
            marker="o",
            label=f"{name}: Brier {c.brier:.3f}, slope {c.slope:.2f}",
        )
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    ax.set(
        xlabel="Predicted probability",
        ylabel="Observed fraction",
        title=f"Calibration, {result.endpoint.upper()}",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize="small")
    return _save(figure, path)
