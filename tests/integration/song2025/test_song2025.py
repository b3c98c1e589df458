"""`icibenefit train --recipe song2025` on a small synthetic cohort, then the service.

Cohort: 36 patients, seed 2, size small, generated with the long-survival
outcome model (``LONG_SURVIVAL_SCALE``, like seed 2's population with many
durable responders): the default model (median OS ~10 months) leaves almost
nobody event-free beyond 36 months.  Here every endpoint has both classes
with >= 9 patients (OS12 26/9, OS36 14/19, PFS12 17/18, PFS36 9/24
event-free/not; recomputed from the manifest below), so nested 5 x 5-fold CV
(7 per class) estimates all four.  The "not estimable" path is covered by
tests/unit/song2025.

Budget: the shipped song2025 recipe with a CI-sized search space and UNET
(``--recipe`` given as a YAML path; same name, endpoints, sources, folds), one
optuna trial, 50 bootstrap resamples.  One training run serves every test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from lifelines import CoxPHFitter
from scipy.stats import chi2
from sklearn.metrics import brier_score_loss
from typer.testing import CliRunner

from icibenefit.cli import app
from icibenefit.synth import LONG_SURVIVAL_SCALE
from icibenefit.training.dataset import endpoint_label, load_cohort
from icibenefit.training.recipes import load_recipe

pytestmark = pytest.mark.integration

PATIENTS = 36
SEED = 2
ENDPOINTS = ("os12", "os36", "pfs12", "pfs36")


@pytest.fixture(scope="module")
def trained(make_cohort: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    cohort = make_cohort(PATIENTS, SEED, survival_scale=LONG_SURVIVAL_SCALE)
    work = tmp_path_factory.mktemp("song2025")
    recipe = load_recipe("song2025").model_dump(mode="json")
    recipe["search_space"] = {
        "n_estimators": [10, 30],
        "max_depth": [2, 4],
        "max_features": ["sqrt"],
        "k_features": [3, 10],
    }
    recipe["unet"] = recipe["unet"] | {"epochs": 6}
    recipe_file = work / "song2025-ci.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    out = work / "bundle"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--recipe",
            str(recipe_file),
            "--cohort",
            str(cohort),
            "--out",
            str(out),
            "--trials",
            "1",
            "--seed",
            "0",
            "--n-boot",
            "50",
            "--cache",
            str(work / "cache"),
        ],
    )
    assert result.exit_code == 0, result.output
    return cohort, out, out.with_name("bundle.report")


def _counts(cohort: Path, endpoint: str) -> tuple[int, int]:
    labels = [endpoint_label(p.outcomes, endpoint) for p in load_cohort(cohort).patients]
    return labels.count(1), labels.count(0)


def test_report_has_nested_aucs_for_all_four_endpoints(trained: tuple[Path, Path, Path]) -> None:
    cohort, _, report = trained
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics) == set(ENDPOINTS)
    for endpoint in ENDPOINTS:
        event_free, not_event_free = _counts(cohort, endpoint)
        assert min(event_free, not_event_free) >= 7, (endpoint, event_free, not_event_free)
        entry = metrics[endpoint]
        assert (entry["n_event_free"], entry["n_evaluable"]) == (
            event_free,
            event_free + not_event_free,
        )
        assert entry["excluded"] is None
        models = entry["models"]
        assert {
            "clinical-baseline",
            "radiomics-baseline",
            "unet-baseline",
            "ensemble-baseline-radiomics",
            "ensemble-baseline-unet",
            "ensemble-baseline-radiomics+unet",
        } <= set(models)
        for m in models.values():
            assert len(m["fold_auc"]) == 5
            assert all(0 <= a <= 1 for a in m["fold_auc"])
            assert m["auc_mean"] == pytest.approx(np.mean(m["fold_auc"]))
            assert m["auc_sd"] == pytest.approx(np.std(m["fold_auc"], ddof=1))
    table = pd.read_csv(report / "nested_cv_auc.csv")
    assert list(table.columns) == ["Model", "Features", "OS12", "OS36", "PFS12", "PFS36"]
    for column in ("OS12", "OS36", "PFS12", "PFS36"):  # "mean ± SD (min-max)" in every cell
        cell = r"[01]\.\d{3} ± [01]\.\d{3} \([01]\.\d{3}-[01]\.\d{3}\)"
        assert table[column].str.fullmatch(cell).all(), column
    for name in ("report.md", "calibration.csv", "hazard_ratios.csv", "auc_summary.png"):
        assert (report / name).is_file()
    importance = pd.read_csv(report / "feature_importance.csv")
    assert set(importance["Source"]) == {"clinical", "radiomics", "unet"}
    assert set(importance["Endpoint"]) == {e.upper() for e in ENDPOINTS}
    for endpoint in ENDPOINTS:
        for plot in ("calibration.png", "roc.png", "km_os.png"):
            assert (report / endpoint / "evaluation" / plot).is_file()
    assert "not estimable" not in (report / "report.md").read_text()


def test_report_calibration_and_hazard_ratio_equal_the_references(
    trained: tuple[Path, Path, Path],
) -> None:
    _, _, report = trained
    models = json.loads((report / "metrics.json").read_text())["os12"]["models"]
    predictions = pd.read_csv(report / "os12" / "predictions.csv")
    name = "ensemble-baseline-radiomics+unet"
    rows = predictions[predictions[f"score:{name}"].notna()]
    y, p = rows["y"].to_numpy(), rows[f"score:{name}"].to_numpy()
    calibration = models[name]["calibration"]
    assert calibration["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    # Hosmer-Lemeshow from its definition: ten groups cut at the deciles of the
    # predicted probability, chi-square over both outcomes, g - 2 df.  The
    # evaluation package's own tests compare it with R's ResourceSelection.
    assert len(np.unique(p)) == len(p)  # tie-free, so the ten groups are all formed
    deciles = np.quantile(p, np.linspace(0, 1, 11))
    statistic = 0.0
    for k in range(10):
        member = (p > deciles[k]) & (p <= deciles[k + 1]) if k else (p <= deciles[1])
        observed, expected, size = y[member].sum(), p[member].sum(), member.sum()
        statistic += (observed - expected) ** 2 / expected
        statistic += (size - observed - (size - expected)) ** 2 / (size - expected)
    assert calibration["hosmer_lemeshow"]["chi2"] == pytest.approx(statistic, rel=1e-9)
    assert calibration["hosmer_lemeshow"]["p"] == pytest.approx(chi2.sf(statistic, 8), rel=1e-9)
    assert calibration["hosmer_lemeshow"]["df"] == 8
    frame = pd.DataFrame(
        {
            "time": rows["os_months"],
            "event": rows["os_event"],
            "high": (p < np.median(p)).astype(int),
        }
    )
    fitted = CoxPHFitter().fit(frame, "time", "event")
    groups_metrics = models[name]["risk_groups"]
    assert groups_metrics["hr_high_vs_low"] == pytest.approx(
        fitted.hazard_ratios_["high"], rel=1e-5
    )


def test_bundle_carries_unet_lifex_parameters_and_four_endpoints(
    trained: tuple[Path, Path, Path],
) -> None:
    _, bundle, _ = trained
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["endpoints"] == list(ENDPOINTS)
    assert manifest["recipe"]["name"] == "song2025"
    assert manifest["intended_use"]["demonstration"] is True
    assert "tensors/unet.safetensors" in manifest["files"]
    assert manifest["extra"]["catalogue"]["served"] == {
        "baseline": ["clinical", "radiomics", "unet"]
    }
    assert list(manifest["pyradiomics_params"]["imageType"]) == ["Original"]
    assert manifest["robust_features"] == []
    unet = manifest["extra"]["unet"]
    assert unet["n_deep_features"] == 64
    assert len(unet["history"]["loss"]) == 6
    schema = manifest["feature_schema"]
    assert len(schema["os12-unet-baseline"]) == 64
    assert all(name.startswith("baseline.original_") for name in schema["os12-radiomics-baseline"])


def test_service_predicts_and_reports_the_four_endpoints(
    trained: tuple[Path, Path, Path], tmp_path: Path, make_settings: Any
) -> None:
    """``icibenefit predict`` and the listener's processor give the training's probabilities."""
    from icibenefit.reporting.processor import build_processor
    from icibenefit.reporting.sr import read_probabilities
    from icibenefit.synth import load_manifest

    cohort, bundle, report = trained
    served = pd.read_csv(report / "served_predictions.csv", dtype={"patient_id": str})
    patient = sorted(served["patient_id"].unique())[0]
    expected = served[served["patient_id"] == patient].set_index("endpoint")["probability"]
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "--dicom",
            str(cohort / "dicom"),
            "--clinical",
            str(cohort),
            "--patient",
            patient,
            "--bundle",
            str(bundle),
            "--out",
            str(tmp_path / "cli"),
            "--no-explain",
        ],
    )
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "cli").glob("prediction-*.json")
    prediction = json.loads(written.read_text())
    assert [e["endpoint"] for e in prediction["endpoints"]] == list(ENDPOINTS)
    assert prediction["ensemble_kind"] == "baseline"
    for e in prediction["endpoints"]:
        assert e["probability"] == pytest.approx(expected[e["endpoint"]], abs=1e-9)

    # The listener's processor (what a job runs): its predictor, then the SR and FHIR reports.
    processor = build_processor(make_settings(model_bundle=bundle))
    entry = next(p for p in load_manifest(cohort).patients if p.patient_id == patient)
    files = sorted((cohort / "dicom" / patient).rglob("*.dcm"))
    service_prediction = processor.predictor(entry.clinical_record, files)
    assert [e.endpoint for e in service_prediction.endpoints] == list(ENDPOINTS)
    for e in service_prediction.endpoints:
        assert e.probability == pytest.approx(expected[e.endpoint], abs=1e-9)

    class Instance:
        def __init__(self, path: Path) -> None:
            import pydicom

            self.path = path
            self.sop_instance_uid = str(
                pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            )

    baseline = service_prediction.imaging[0]
    reports = processor.report(
        service_prediction, entry.clinical_record, [Instance(f) for f in files], baseline.study_uid
    )
    assert reports.sr is not None
    assert read_probabilities(reports.sr) == pytest.approx(
        {e.endpoint: e.probability for e in service_prediction.endpoints}, abs=1e-6
    )
    risk = [
        r["resource"]
        for r in reports.transaction["entry"]
        if r["resource"]["resourceType"] == "RiskAssessment"
    ]
    assert len(risk) == 1
    coded = [p["outcome"]["coding"][0]["code"] for p in risk[0]["prediction"]]
    assert coded == list(ENDPOINTS)
