"""The report of a nested-CV recipe (seed 2): AUCs over outer folds, calibration, risk-group HRs.

Layout of seed 2's results: per endpoint (OS12, OS36, PFS12, PFS36) and model
(clinical, traditional radiomics, deep radiomics, their ensembles) the AUC
as mean and spread over the outer folds; the calibration of the pooled
out-of-fold probabilities (curve, Brier, slope/intercept, Hosmer-Lemeshow
g = 10); and the hazard ratio of the patients the model calls high risk
versus low risk, on the endpoint's own time-to-event outcome (OS for OS12/36,
PFS for PFS12/36).  Statistics come from :mod:`icibenefit.training.evaluation`
(checked against R and scikit-learn); this module chooses patients and lays
the numbers out.

Risk groups: seed 2 does not state its cut-off.  ``risk_cutoff: median``
(the recipe's default) calls "high risk" the patients whose out-of-fold
probability of being event-free at the landmark is below the median of the
model's probabilities, which always gives two groups of about equal size; a
number uses that fixed probability (the service labels risk at 0.5).

Files::

    report.md                      all tables + figures
    metrics.json                   endpoint -> model -> fold AUCs, mean, SD, calibration, HR
    nested_cv_auc.{md,csv}         AUC mean +- SD (min-max) per model and endpoint
    calibration.{md,csv}           Brier, slope, intercept, HL chi2/df/p per model and endpoint
    hazard_ratios.{md,csv}         HR high vs low risk, 95% CI, Wald p, log-rank p
    feature_importance.{md,csv}    top features of each deployed model (forest importances)
    auc_summary.png                mean AUC +- SD bars per endpoint
    calibration_summary.png        calibration curves of the ensembles per endpoint
    <endpoint>/predictions.csv     out-of-fold probabilities with their outer fold
    <endpoint>/evaluation/         write_report of all models on their common patients
                                   (ROC, calibration curve, Kaplan-Meier PNGs)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from icibenefit.domain import ENDPOINTS
from icibenefit.training.evaluation import (
    ModelLabel,
    calibration_metrics,
    evaluate_models,
    to_markdown,
    write_report,
)
from icibenefit.training.evaluation.survival import cox_high_vs_low, logrank

if TYPE_CHECKING:
    from icibenefit.training.cohort_manifest import Outcomes
    from icibenefit.training.nested_cv import NestedEndpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RiskGroups:
    """HR of the high-risk group versus the low-risk one on one outcome."""

    outcome: str
    cutoff: float
    n: int
    n_high: int
    events: int
    hr: float
    hr_ci: tuple[float, float]
    p: float
    logrank_p: float


def risk_groups(
    probabilities: ArrayLike,
    times: ArrayLike,
    events: ArrayLike,
    outcome: str,
    cutoff: float | str,
) -> RiskGroups:
    """Cox HR (Efron, Wald CI and p) and log-rank p of high (p < cut-off) vs low risk."""
    p = np.asarray(probabilities, dtype=float)
    level = float(np.median(p)) if cutoff == "median" else float(cutoff)
    high = (p < level).astype(int)
    t = np.asarray(times, dtype=float)
    e = np.asarray(events, dtype=int)
    hr, ci, wald_p = cox_high_vs_low(t, e, high)
    _, logrank_p = logrank(t, e, high)
    return RiskGroups(
        outcome, level, int(p.size), int(high.sum()), int(e.sum()), hr, ci, wald_p, logrank_p
    )


def _survival(outcomes: Outcomes, kind: str) -> tuple[float, int]:
    if kind == "os":
        return outcomes.os_months, int(outcomes.os_event)
    return outcomes.pfs_months, int(outcomes.pfs_event)


def _num(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _model_metrics(
    entry: NestedEndpoint,
    model: str,
    outcomes: Mapping[str, Outcomes],
    cutoff: float | str,
) -> dict[str, Any]:
    scores = entry.scores[model]
    ids = sorted(scores)
    y = np.array([entry.labels[pid] for pid in ids])
    p = np.array([scores[pid] for pid in ids])
    folds = entry.fold_aucs(model)
    finite = [a for a in folds if math.isfinite(a)]
    calibration = calibration_metrics(y, p)
    kind = ENDPOINTS[entry.endpoint].kind
    times, events = zip(*(_survival(outcomes[pid], kind) for pid in ids), strict=True)
    groups = risk_groups(p, times, events, kind, cutoff)
    from sklearn.metrics import roc_auc_score

    return {
        "model": entry.titles[model][0],
        "features": entry.titles[model][1],
        "n": len(ids),
        "n_positive": int(y.sum()),
        "fold_auc": [_num(a) for a in folds],
        "auc_mean": _num(float(np.mean(finite))) if finite else None,
        "auc_sd": _num(float(np.std(finite, ddof=1))) if len(finite) > 1 else None,
        "auc_min": _num(min(finite)) if finite else None,
        "auc_max": _num(max(finite)) if finite else None,
        "pooled_auc": _num(float(roc_auc_score(y, p))) if len(set(y.tolist())) == 2 else None,
        "calibration": {
            "brier": _num(calibration.brier),
            "slope": _num(calibration.slope),
            "intercept": _num(calibration.intercept),
            "hosmer_lemeshow": {
                "chi2": _num(calibration.hosmer_lemeshow.chi2),
                "df": calibration.hosmer_lemeshow.df,
                "p": _num(calibration.hosmer_lemeshow.p),
            },
            "curve": {
                "predicted": list(calibration.curve_predicted),
                "observed": list(calibration.curve_observed),
            },
        },
        "risk_groups": {
            "outcome": groups.outcome,
            "cutoff": groups.cutoff,
            "n": groups.n,
            "n_high_risk": groups.n_high,
            "events": groups.events,
            "hr_high_vs_low": _num(groups.hr),
            "hr_ci": [_num(groups.hr_ci[0]), _num(groups.hr_ci[1])],
            "p": _num(groups.p),
            "logrank_p": _num(groups.logrank_p),
        },
        "inner_tuning": entry.params.get(model, []),
    }


def _value(value: float | None) -> float:
    return float("nan") if value is None else value


def _tables(metrics: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    auc_rows: dict[str, dict[str, Any]] = {}
    calibration_rows, hr_rows = [], []
    for endpoint, entry in metrics.items():
        column = endpoint.upper()
        for name, m in entry.get("models", {}).items():
            row = auc_rows.setdefault(name, {"Model": m["model"], "Features": m["features"]})
            mean, sd = _value(m["auc_mean"]), _value(m["auc_sd"])
            row[column] = (
                f"{_fmt(mean)} ± {_fmt(sd)} ({_fmt(_value(m['auc_min']))}-"
                f"{_fmt(_value(m['auc_max']))})"
            )
            c = m["calibration"]
            calibration_rows.append(
                {
                    "Endpoint": column,
                    "Model": m["model"],
                    "Features": m["features"],
                    "N": m["n"],
                    "Brier": _fmt(_value(c["brier"])),
                    "Slope": _fmt(_value(c["slope"]), 2),
                    "Intercept": _fmt(_value(c["intercept"]), 2),
                    "HL chi2": _fmt(_value(c["hosmer_lemeshow"]["chi2"]), 2),
                    "HL df": c["hosmer_lemeshow"]["df"],
                    "HL p": _p(_value(c["hosmer_lemeshow"]["p"])),
                }
            )
            r = m["risk_groups"]
            hr_rows.append(
                {
                    "Endpoint": column,
                    "Model": m["model"],
                    "Features": m["features"],
                    "Outcome": r["outcome"].upper(),
                    "N (high risk)": f"{r['n']} ({r['n_high_risk']})",
                    "HR high vs low [95% CI]": (
                        f"{_fmt(_value(r['hr_high_vs_low']), 2)} "
                        f"[{_fmt(_value(r['hr_ci'][0]), 2)},{_fmt(_value(r['hr_ci'][1]), 2)}]"
                    ),
                    "p (Wald)": _p(_value(r["p"])),
                    "p (log-rank)": _p(_value(r["logrank_p"])),
                }
            )
    columns = ["Model", "Features", *(endpoint.upper() for endpoint in metrics)]
    auc_table = pd.DataFrame(list(auc_rows.values()), columns=columns).fillna("not estimable")
    return auc_table, pd.DataFrame(calibration_rows), pd.DataFrame(hr_rows)


def _auc_plot(metrics: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    endpoints = [e for e, m in metrics.items() if m.get("models")]
    models = sorted({name for e in endpoints for name in metrics[e]["models"]})
    figure = Figure(figsize=(3.5 + 1.6 * max(len(endpoints), 1), 4.5), layout="constrained")
    ax = figure.add_subplot()
    width = 0.8 / max(len(models), 1)
    for i, name in enumerate(models):
        means = [_value(metrics[e]["models"].get(name, {}).get("auc_mean")) for e in endpoints]
        sds = [_value(metrics[e]["models"].get(name, {}).get("auc_sd")) for e in endpoints]
        positions = np.arange(len(endpoints)) + (i - (len(models) - 1) / 2) * width
        ax.bar(positions, means, width, yerr=np.nan_to_num(sds), capsize=2, label=name)
    ax.axhline(0.5, linestyle=":", color="grey")
    ax.set(
        xticks=np.arange(len(endpoints)),
        xticklabels=[e.upper() for e in endpoints],
        ylim=(0, 1),
        ylabel="AUC (mean ± SD over outer folds)",
        title="Nested cross-validation",
    )
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _calibration_plot(metrics: dict[str, Any], path: Path) -> Path:
    """One panel per estimable endpoint: calibration curves of the ensembles (10 quantile bins)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    endpoints = [e for e, m in metrics.items() if m.get("models")]
    figure = Figure(figsize=(4.5 * max(len(endpoints), 1), 4.5), layout="constrained")
    for position, endpoint in enumerate(endpoints, start=1):
        ax = figure.add_subplot(1, len(endpoints), position)
        for name, m in metrics[endpoint]["models"].items():
            if not name.startswith("ensemble-"):
                continue
            c = m["calibration"]
            ax.plot(
                c["curve"]["predicted"],
                c["curve"]["observed"],
                marker="o",
                label=f"{m['features']}: Brier {_fmt(_value(c['brier']))}, "
                f"HL p {_p(_value(c['hosmer_lemeshow']['p']))}",
            )
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="Predicted probability (out of fold)",
            ylabel="Observed fraction",
            title=f"Calibration, {endpoint.upper()}",
        )
        ax.legend(fontsize="x-small", loc="upper left")
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def importance_table(
    pipelines: Mapping[str, Any], schema: Mapping[str, Sequence[str]], top: int = 5
) -> pd.DataFrame:
    """Most influential features of each deployed single-source model (seed 2's predictors).

    The forest's impurity importances (scikit-learn's ``feature_importances_``)
    over the features its univariate selection kept, highest first.
    """
    rows = []
    for name, pipeline in sorted(pipelines.items()):
        kept = np.asarray(schema[name])[pipeline.named_steps["select"].get_support()]
        importances = pipeline.named_steps["forest"].feature_importances_
        order = np.argsort(-importances, kind="stable")[:top]
        endpoint, source, _ = name.split("-", 2)
        rows.append(
            {
                "Endpoint": endpoint.upper(),
                "Source": source,
                "Top features (importance)": ", ".join(
                    f"{kept[i].removeprefix('baseline.')} ({importances[i]:.3f})" for i in order
                ),
            }
        )
    return pd.DataFrame(rows)


def _write_endpoint_folder(
    folder: Path,
    entry: NestedEndpoint,
    outcomes: Mapping[str, Outcomes],
    n_boot: int,
    seed: int,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fold_of = {pid: i for i, fold in enumerate(entry.folds) for pid in fold}
    ids = sorted(entry.labels)
    frame = pd.DataFrame(
        {
            "patient_id": ids,
            "y": [entry.labels[p] for p in ids],
            "outer_fold": [fold_of[p] for p in ids],
        }
    )
    for model, scores in entry.scores.items():
        frame[f"score:{model}"] = [scores.get(p, np.nan) for p in ids]
    for kind in ("pfs", "os"):
        frame[f"{kind}_months"] = [_survival(outcomes[p], kind)[0] for p in ids]
        frame[f"{kind}_event"] = [_survival(outcomes[p], kind)[1] for p in ids]
    frame.to_csv(folder / "predictions.csv", index=False, float_format="%.17g")
    common = sorted(set.intersection(*(set(s) for s in entry.scores.values())))
    y = [entry.labels[p] for p in common]
    if len(common) < 4 or len(set(y)) < 2:
        return
    result = evaluate_models(
        y,
        {m: [s[p] for p in common] for m, s in entry.scores.items()},
        endpoint=entry.endpoint,
        survival={
            kind: (
                [_survival(outcomes[p], kind)[0] for p in common],
                [_survival(outcomes[p], kind)[1] for p in common],
            )
            for kind in ("pfs", "os")
        },
        labels={m: ModelLabel(*entry.titles[m]) for m in entry.scores},
        n_boot=n_boot,
        seed=seed,
        delong_pairs=[],
    )
    try:
        write_report(result, folder / "evaluation")
    except ValueError as exc:  # an infinite HR bound on a tiny or separated group
        logger.warning("evaluation of %s not written: %s", entry.endpoint, exc)


def write_nested_report(
    out_dir: Path,
    results: Mapping[str, NestedEndpoint],
    outcomes: Mapping[str, Outcomes],
    *,
    recipe_name: str,
    outer_folds: int,
    inner_folds: int,
    risk_cutoff: float | str,
    synthetic: bool,
    deployed: Sequence[str],
    n_boot: int,
    seed: int,
    deployed_models: Mapping[str, Any] | None = None,
    feature_schema: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Write the report folder (module docstring) and return the metrics for the bundle.

    ``deployed`` are the endpoints the bundle serves (models fitted on all
    patients); with ``deployed_models`` (bundle name -> fitted pipeline) and
    their ``feature_schema`` the report also lists their most influential features.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {}
    for endpoint, entry in results.items():
        counts = np.bincount(np.array(list(entry.labels.values()), dtype=int), minlength=2)
        metrics[endpoint] = {
            "n_evaluable": len(entry.labels),
            "n_event_free": int(counts[1]),
            "excluded": entry.excluded,
            "deployed": endpoint in deployed,
            "outer_folds": [len(f) for f in entry.folds],
            "models": {
                model: _model_metrics(entry, model, outcomes, risk_cutoff) for model in entry.scores
            },
        }
        if entry.scores:
            _write_endpoint_folder(out_dir / endpoint, entry, outcomes, n_boot, seed)
    auc_table, calibration_table, hr_table = _tables(metrics)
    sections = [
        "# Training report (nested cross-validation)\n",
        f"Recipe `{recipe_name}`: nested {outer_folds}-fold CV (outer folds estimate, "
        f"inner {inner_folds}-fold CV tunes), seed {seed}. The deployed models in the bundle "
        "are fitted on all patients afterwards."
        + (" Synthetic cohort: demonstration models, not for clinical use." if synthetic else "")
        + "\n",
        "Patients censored before an endpoint's landmark are excluded from it. Risk groups: "
        + (
            "high risk = out-of-fold probability of being event-free at the landmark below "
            "the model's median"
            if risk_cutoff == "median"
            else f"high risk = probability below {risk_cutoff}"
        )
        + "; HR = Cox (Efron), high vs low risk, on the endpoint's outcome (OS or PFS).\n",
    ]
    for endpoint, entry in metrics.items():
        line = (
            f"- {endpoint.upper()}: {entry['n_evaluable']} evaluable patients, "
            f"{entry['n_event_free']} event-free beyond the landmark"
        )
        if entry["excluded"]:
            line += f"; **not estimable**: {entry['excluded']}"
        line += "; served by the bundle" if entry["deployed"] else "; not served by the bundle"
        sections.append(line)
    sections.append("")
    tables: list[tuple[str, str, pd.DataFrame]] = [
        ("nested_cv_auc", "AUC over the outer folds: mean ± SD (min-max)", auc_table),
        ("calibration", "Calibration of the out-of-fold probabilities", calibration_table),
        ("hazard_ratios", "High vs low risk: hazard ratios", hr_table),
    ]
    if deployed_models and feature_schema:
        tables.append(
            (
                "feature_importance",
                "Most influential features of the deployed models",
                importance_table(deployed_models, feature_schema),
            )
        )
    for stem, heading, table in tables:
        table.to_csv(out_dir / f"{stem}.csv", index=False)
        markdown = to_markdown(table) if not table.empty else "No estimable endpoint.\n"
        (out_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
        sections.append(f"## {heading}\n\n{markdown}")
    figures = [
        _auc_plot(metrics, out_dir / "auc_summary.png"),
        _calibration_plot(metrics, out_dir / "calibration_summary.png"),
    ]
    lines = [f"![{p.stem}]({p.name})" for p in figures]
    for endpoint in metrics:
        for plot in ("calibration", "roc", "km_os", "km_pfs"):
            path = out_dir / endpoint / "evaluation" / f"{plot}.png"
            if path.is_file():
                lines.append(f"![{endpoint} {plot}]({path.relative_to(out_dir)})")
    sections.append("## Figures\n\n" + "\n".join(lines) + "\n")
    (out_dir / "metrics.json").write_text(
        json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    (out_dir / "report.md").write_text("\n".join(sections), encoding="utf-8")
    return metrics
