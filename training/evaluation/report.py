"""Write an evaluation to a folder: metrics.json, tables (Markdown + CSV), plots (PNG).

Files written by :func:`write_report`::

    metrics.json          issue 7's schema, exactly
    details.json          settings (n_boot, seed, threshold), group sizes, calibration
    discrimination.{md,csv}   Tables 2-4 layout
    survival.{md,csv}         Tables 5-6 layout (when survival data was given)
    delong.{md,csv}           paired AUC comparisons
    calibration.{md,csv}      seed 2's calibration summary
    report.md             all tables in one document
    roc.png, km_<outcome>.png, calibration.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from icibenefit.training.evaluation.api import EvaluationResult
from icibenefit.training.evaluation.plots import plot_calibration, plot_kaplan_meier, plot_roc
from icibenefit.training.evaluation.tables import (
    DISCRIMINATION_COLUMNS,
    calibration_table,
    delong_table,
    discrimination_table,
    survival_table,
    to_markdown,
)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _write_table(out_dir: Path, stem: str, table: pd.DataFrame, bold: list[str]) -> str:
    table.to_csv(out_dir / f"{stem}.csv", index=False)
    markdown = to_markdown(table, bold)
    (out_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
    return markdown


def write_report(result: EvaluationResult, out_dir: Path | str) -> dict[str, Path]:
    """Write every output of one evaluation into ``out_dir`` (created if needed).

    Returns
    -------
    dict
        Output name (``"metrics"``, ``"roc"``, ``"km_pfs"``, ...) -> path written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {"metrics": out / "metrics.json", "details": out / "details.json"}
    _write_json(written["metrics"], result.metrics_json())
    _write_json(written["details"], result.details_json())

    title = result.endpoint.upper()
    analysed = {outcome for e in result.models.values() for outcome in e.survival}
    sections = [
        f"# Evaluation, endpoint {title}\n",
        f"N test = {result.n} ({int(result.y.sum())} with label 1); 95% CIs from "
        f"{result.n_boot} stratified bootstrap resamples (seed {result.seed}); "
        f"threshold {result.threshold:g}. Hazard ratios compare the high-probability group "
        f"(score >= {result.threshold:g}) with the low one (Cox, Efron ties; p-value = Wald); "
        "C-index: higher score = longer survival.\n",
    ]
    tables = [
        (
            "discrimination",
            "Response prediction performance",
            discrimination_table([result]),
            list(DISCRIMINATION_COLUMNS.values()),
        ),
        (
            "survival",
            "Hazard ratios (high vs low predicted probability) and C-indexes",
            survival_table([result]),
            ["PFS C-index", "OS C-index"],
        ),
        ("delong", "DeLong tests of paired AUCs", delong_table([result]), []),
        ("calibration", "Calibration", calibration_table([result]), []),
    ]
    for stem, heading, table, bold in tables:
        if stem == "survival" and not analysed:
            continue
        if table.empty and stem != "discrimination":
            continue
        sections.append(f"## {heading}\n\n{_write_table(out, stem, table, bold)}")
        written[stem] = out / f"{stem}.csv"

    written["roc"] = plot_roc(result, out / "roc.png")
    for outcome in sorted(analysed):
        written[f"km_{outcome}"] = plot_kaplan_meier(result, outcome, out / f"km_{outcome}.png")
    if any(e.calibration is not None for e in result.models.values()):
        written["calibration_plot"] = plot_calibration(result, out / "calibration.png")
    plots = [p for key, p in written.items() if p.suffix == ".png"]
    sections.append("## Figures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n")
    written["report"] = out / "report.md"
    written["report"].write_text("\n".join(sections), encoding="utf-8")
    return written
