"""The nested-CV report: its numbers equal the reference libraries on its own predictions.

Hosmer-Lemeshow is checked here against the textbook definition (deciles of
risk, chi-square over both outcomes, g - 2 df) on the report's out-of-fold
predictions; the evaluation package's own tests check it against a restatement
of R's ResourceSelection::hoslem.test (tests/unit/evaluation/test_calibration.py
and tests/integration/evaluation), which is not repeated here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from scipy.stats import chi2
from sklearn.metrics import brier_score_loss, roc_auc_score

from icibenefit.training.cohort_manifest import Outcomes
from icibenefit.training.nested_cv import NestedEndpoint, outer_folds
from icibenefit.training.nested_report import write_nested_report


def textbook_hosmer_lemeshow(y: np.ndarray, p: np.ndarray, g: int = 10) -> tuple[float, float]:
    """Sort by predicted risk, cut into g equal groups, sum (O - E)^2 / E over both outcomes."""
    order = np.argsort(p)
    statistic = 0.0
    for group in np.array_split(order, g):
        observed, expected, size = y[group].sum(), p[group].sum(), len(group)
        statistic += (observed - expected) ** 2 / expected
        statistic += (size - observed - (size - expected)) ** 2 / (size - expected)
    return statistic, float(chi2.sf(statistic, g - 2))


@pytest.fixture(scope="module")
def report(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, NestedEndpoint, dict[str, Outcomes]]:
    rng = np.random.default_rng(11)
    n = 100
    ids = [f"p{i:03d}" for i in range(n)]
    latent = rng.normal(size=n)
    os_months = np.exp(2.4 + 0.6 * latent + 0.5 * rng.normal(size=n))
    event = rng.uniform(size=n) < 0.85
    outcomes = {
        pid: Outcomes(
            pfs_months=float(t) / 2, pfs_event=bool(e), os_months=float(t), os_event=bool(e)
        )
        for pid, t, e in zip(ids, os_months, event, strict=True)
    }
    labels = {pid: int(os_months[i] > 12) for i, pid in enumerate(ids)}
    clinical = 1 / (1 + np.exp(-(0.9 * latent + 0.8 * rng.normal(size=n))))
    imaging = 1 / (1 + np.exp(-(0.5 * latent + 1.0 * rng.normal(size=n))))
    entry = NestedEndpoint("os12", labels, outer_folds(labels, 5, 0))
    entry.scores = {
        "clinical-baseline": dict(zip(ids, map(float, clinical), strict=True)),
        "radiomics-baseline": dict(zip(ids, map(float, imaging), strict=True)),
    }
    entry.scores["ensemble-baseline-radiomics"] = {
        pid: (entry.scores["clinical-baseline"][pid] + entry.scores["radiomics-baseline"][pid]) / 2
        for pid in ids
    }
    entry.titles = {m: (m, "features") for m in entry.scores}
    excluded = NestedEndpoint("os36", {"p000": 0}, [], excluded="1 patients event-free")
    out = tmp_path_factory.mktemp("nested_report")
    write_nested_report(
        out,
        {"os12": entry, "os36": excluded},
        outcomes,
        recipe_name="song2025",
        outer_folds=5,
        inner_folds=5,
        risk_cutoff="median",
        synthetic=True,
        deployed=["os12"],
        n_boot=50,
        seed=0,
    )
    return out, entry, outcomes


def test_files_in_seed2_layout(report: tuple[Path, NestedEndpoint, dict[str, Outcomes]]) -> None:
    out, _, _ = report
    for name in (
        "report.md",
        "metrics.json",
        "nested_cv_auc.csv",
        "calibration.csv",
        "hazard_ratios.csv",
        "auc_summary.png",
        "calibration_summary.png",
        "os12/predictions.csv",
        "os12/evaluation/calibration.png",
    ):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "nested_cv_auc.csv")
    assert list(table.columns) == ["Model", "Features", "OS12", "OS36"]
    assert (table["OS36"] == "not estimable").all()
    assert "not estimable" in (out / "report.md").read_text()


def test_auc_mean_and_spread_over_outer_folds(
    report: tuple[Path, NestedEndpoint, dict[str, Outcomes]],
) -> None:
    out, entry, _ = report
    metrics = json.loads((out / "metrics.json").read_text())["os12"]["models"]
    for model, scores in entry.scores.items():
        aucs = [
            roc_auc_score([entry.labels[p] for p in fold], [scores[p] for p in fold])
            for fold in entry.folds
        ]
        assert metrics[model]["fold_auc"] == pytest.approx(aucs, abs=1e-12)
        assert metrics[model]["auc_mean"] == pytest.approx(np.mean(aucs), abs=1e-12)
        assert metrics[model]["auc_sd"] == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)


def test_calibration_equals_textbook_hosmer_lemeshow_and_sklearn_brier(
    report: tuple[Path, NestedEndpoint, dict[str, Outcomes]],
) -> None:
    out, entry, _ = report
    metrics = json.loads((out / "metrics.json").read_text())["os12"]["models"]
    for model, scores in entry.scores.items():
        ids = sorted(scores)
        y = np.array([entry.labels[p] for p in ids])
        p = np.array([scores[pid] for pid in ids])
        statistic, p_value = textbook_hosmer_lemeshow(y, p)
        hl = metrics[model]["calibration"]["hosmer_lemeshow"]
        assert hl["chi2"] == pytest.approx(statistic, rel=1e-10)
        assert hl["p"] == pytest.approx(p_value, rel=1e-9)
        assert hl["df"] == 8
        assert metrics[model]["calibration"]["brier"] == pytest.approx(
            brier_score_loss(y, p), abs=1e-15
        )


def test_hazard_ratio_of_high_vs_low_risk_equals_lifelines(
    report: tuple[Path, NestedEndpoint, dict[str, Outcomes]],
) -> None:
    out, entry, outcomes = report
    metrics = json.loads((out / "metrics.json").read_text())["os12"]["models"]
    for model, scores in entry.scores.items():
        ids = sorted(scores)
        p = np.array([scores[pid] for pid in ids])
        frame = pd.DataFrame(
            {
                "time": [outcomes[pid].os_months for pid in ids],
                "event": [int(outcomes[pid].os_event) for pid in ids],
                "high": (p < np.median(p)).astype(int),
            }
        )
        fitted = CoxPHFitter().fit(frame, "time", "event")
        groups = metrics[model]["risk_groups"]
        assert groups["outcome"] == "os"
        assert groups["n_high_risk"] == 50
        assert groups["hr_high_vs_low"] == pytest.approx(fitted.hazard_ratios_["high"], rel=1e-5)
        assert groups["p"] == pytest.approx(fitted.summary.loc["high", "p"], rel=1e-4)
    # The simulated risk is real: the clinical model's high-risk group dies sooner.
    assert metrics["clinical-baseline"]["risk_groups"]["hr_high_vs_low"] > 1


def test_importance_table_names_the_selected_features_by_forest_importance() -> None:
    from icibenefit.training.models import build_pipeline
    from icibenefit.training.nested_report import importance_table

    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 6))
    y = (X[:, 4] + 0.3 * rng.normal(size=80) > 0).astype(int)
    pipeline = build_pipeline(
        n_estimators=50,
        max_depth=3,
        max_features="sqrt",
        k_features=3,
        smote_k_neighbors=None,
        imputer_clusters=2,
        seed=0,
    ).fit(X, y)
    names = [f"baseline.f{i}" for i in range(6)]
    table = importance_table(
        {"os12-radiomics-baseline": pipeline}, {"os12-radiomics-baseline": names}
    )
    assert list(table["Endpoint"]) == ["OS12"]
    assert list(table["Source"]) == ["radiomics"]
    listed = table["Top features (importance)"].iloc[0].split(", ")
    assert len(listed) == 3
    assert listed[0].startswith("f4 (")
