"""Tables laid out like seed 1's Tables 2-6, as pandas DataFrames and Markdown.

Cells hold the paper's formatting ("0.667 [0.485,0.833]", HRs with two
decimals); exact numbers are in metrics.json. Several results (e.g. PFS6 and
PFS9, as in Table 4) can go into one table: rows keep the input order and the
"Endpoint" column tells them apart. In Markdown the best value of each
discrimination metric and C-index per endpoint is bold, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from icibenefit.training.evaluation.api import EvaluationResult
from icibenefit.training.evaluation.classification import Estimate

DISCRIMINATION_COLUMNS = {
    "auc": "AUC [95% CI]",
    "acc": "ACC [95% CI]",
    "sens": "SENS [95% CI]",
    "spec": "SPEC [95% CI]",
    "prec": "PREC [95% CI]",
    "bacc": "bACC [95% CI]",
}
OUTCOME_NAMES = {"pfs": "PFS", "os": "OS"}
NOT_AVAILABLE = "n/a"


def _fmt(value: float, digits: int) -> str:
    return NOT_AVAILABLE if math.isnan(value) else f"{value:.{digits}f}"


def _with_ci(value: float, ci: tuple[float, float], digits: int) -> str:
    if math.isnan(value):
        return NOT_AVAILABLE
    return f"{_fmt(value, digits)} [{_fmt(ci[0], digits)},{_fmt(ci[1], digits)}]"


def _p(value: float) -> str:
    if math.isnan(value):
        return NOT_AVAILABLE
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def discrimination_table(results: Sequence[EvaluationResult]) -> pd.DataFrame:
    """Tables 2-4: Endpoint, Model, Features, N test, and each metric with its 95% CI."""
    rows = []
    for result in results:
        for evaluation in result.models.values():
            row = {
                "Endpoint": result.endpoint.upper(),
                "Model": evaluation.label.model,
                "Features": evaluation.label.features,
                "N test": result.n,
            }
            for metric, column in DISCRIMINATION_COLUMNS.items():
                estimate: Estimate = getattr(evaluation.discrimination, metric)
                row[column] = _with_ci(estimate.value, estimate.ci, 3)
            rows.append(row)
    return pd.DataFrame(rows)


def survival_table(results: Sequence[EvaluationResult]) -> pd.DataFrame:
    """Tables 5-6: per outcome the HR [95% CI], Cox p, log-rank p and C-index."""
    rows = []
    for result in results:
        for evaluation in result.models.values():
            row: dict[str, object] = {
                "Endpoint": result.endpoint.upper(),
                "Model": evaluation.label.model,
                "Features": evaluation.label.features,
            }
            for outcome, metrics in evaluation.survival.items():
                name = OUTCOME_NAMES.get(outcome, outcome.upper())
                row[f"{name} HR [95% CI]"] = _with_ci(metrics.hr, metrics.hr_ci, 2)
                row[f"{name} p-value"] = _p(metrics.cox_p)
                row[f"{name} log-rank p"] = _p(metrics.logrank_p)
                row[f"{name} C-index"] = _fmt(metrics.c_index, 3)
            rows.append(row)
    return pd.DataFrame(rows)


def delong_table(results: Sequence[EvaluationResult]) -> pd.DataFrame:
    """DeLong comparisons of paired AUCs, as the paper reports them in its text."""
    rows = []
    for result in results:
        for pair in result.delong:
            rows.append(
                {
                    "Endpoint": result.endpoint.upper(),
                    "Model A": result.models[pair.a].label.model,
                    "Features A": result.models[pair.a].label.features,
                    "Model B": result.models[pair.b].label.model,
                    "Features B": result.models[pair.b].label.features,
                    "AUC A": _fmt(pair.result.auc_a, 3),
                    "AUC B": _fmt(pair.result.auc_b, 3),
                    "z": _fmt(pair.result.z, 3),
                    "p-value": _p(pair.result.p),
                }
            )
    return pd.DataFrame(rows)


def calibration_table(results: Sequence[EvaluationResult]) -> pd.DataFrame:
    """Seed 2's calibration summary: Brier, slope, intercept, Hosmer-Lemeshow."""
    rows = []
    for result in results:
        for evaluation in result.models.values():
            c = evaluation.calibration
            if c is None:
                continue
            rows.append(
                {
                    "Endpoint": result.endpoint.upper(),
                    "Model": evaluation.label.model,
                    "Features": evaluation.label.features,
                    "N test": result.n,
                    "Brier": _fmt(c.brier, 3),
                    "Calibration slope": _fmt(c.slope, 2),
                    "Calibration intercept": _fmt(c.intercept, 2),
                    "HL chi2 (df)": f"{_fmt(c.hosmer_lemeshow.chi2, 2)} ({c.hosmer_lemeshow.df})",
                    "HL p-value": _p(c.hosmer_lemeshow.p),
                }
            )
    return pd.DataFrame(rows)


def _leading_number(cell: object) -> float:
    try:
        return float(str(cell).split(" ")[0])
    except ValueError:
        return float("nan")


def to_markdown(table: pd.DataFrame, bold_max: Sequence[str] = ()) -> str:
    """A GitHub Markdown table; the largest value of each ``bold_max`` column per endpoint is bold.

    Written by hand because pandas' ``to_markdown`` needs the extra ``tabulate`` package.
    """
    if table.empty:
        return "_no rows_\n"
    cells = table.astype(str).copy()
    for column in bold_max:
        if column not in table:
            continue
        values = table[column].map(_leading_number)
        best = values.groupby(table["Endpoint"]).transform("max")
        hit = values.notna() & (values == best)
        cells.loc[hit, column] = "**" + cells.loc[hit, column] + "**"
    lines = [
        "| " + " | ".join(cells.columns) + " |",
        "|" + "|".join("---" for _ in cells.columns) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False, name=None)]
    return "\n".join(lines) + "\n"
