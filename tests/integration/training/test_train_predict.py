"""Training on a small synthetic cohort, then ``icibenefit predict`` on its DICOM.

One training run (module scope, ~2 minutes on 2 quiet cores: 30 patients, 2
optuna trials, small forests, quick CNN) serves every test here.  The one-feature-path acceptance:
``predict`` on the DICOM folder gives, for 10 patients, the probabilities the
training code computed for them from the same bundle, to 1e-9.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from icibenefit.cli import app
from icibenefit.errors import ModelBundleError
from icibenefit.pipeline.rules import PipelineRules
from icibenefit.training.recipes import Recipe, SearchSpace, load_recipe

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PATIENTS = 30
SEED = 11


@pytest.fixture(scope="module")
def trained(make_cohort, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Train through the same entry point as the CLI, with a lighter search space.

    The farina2023 recipe with only the forest sizes shrunk (and 2 trials, the
    quick CNN budget): every model, ensemble and report of the real recipe, in
    CI time.
    """
    from icibenefit.training.deep_features import CnnBudget
    from icibenefit.training.trainer import train

    cohort = make_cohort(PATIENTS, SEED)
    work = tmp_path_factory.mktemp("train")
    recipe = load_recipe("farina2023")
    light = Recipe.model_validate(
        recipe.model_dump()
        | {"search_space": SearchSpace(n_estimators=(20, 60), max_depth=(2, 6), k_features=(3, 30))}
    )
    result = train(
        cohort,
        work / "bundle",
        light,
        trials=2,
        seed=3,
        cache_dir=work / "cache",
        n_boot=50,
        cnn_budget=CnnBudget.quick(),
    )
    return cohort, result.bundle, result.report_dir


def test_train_builds_every_model_of_tables_2_to_4(trained: tuple[Path, Path, Path]) -> None:
    _, bundle, report = trained
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["intended_use"]["demonstration"] is True
    recipe = load_recipe("farina2023")
    expected = {
        f"estimators/{e}-{s}-{k}.skops"
        for e in recipe.endpoints
        for s in ("clinical", "radiomics", "dfimm")
        for k in ("baseline", "delta", "longitudinal")
    }
    assert expected <= set(manifest["files"])
    assert "tensors/cnn.safetensors" in manifest["files"]
    assert manifest["extra"]["catalogue"]["served"] == {
        "baseline": ["clinical", "dfimm"],
        "longitudinal": ["clinical", "dfimm"],
    }
    assert 0 < len(manifest["robust_features"]) < 1502
    assert manifest["extra"]["pipeline_rules"] == PipelineRules().as_settings()
    for endpoint in recipe.endpoints:
        predictions = pd.read_csv(report / endpoint / "predictions.csv")
        for model in (
            "cnn-baseline",
            "ensemble-baseline-dfimm",
            "ensemble-longitudinal-dfimm",
            "ensemble-longitudinal-radiomics",
            "dfimm-delta",
        ):
            assert predictions[f"score:{model}"].notna().any(), (endpoint, model)
    text = (report / "report.md").read_text()
    assert "DeLong p =" in text
    assert "ensemble-longitudinal-dfimm" in text


def test_predict_on_dicom_equals_training_probabilities(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cohort, bundle, report = trained
    served = pd.read_csv(report / "served_predictions.csv", dtype={"patient_id": str})
    patients = sorted(served["patient_id"].unique())[:10]
    runner = CliRunner()
    kinds = set()
    for index, patient in enumerate(patients):
        out = tmp_path / patient
        args = [
            "predict",
            "--dicom",
            str(cohort / "dicom"),
            "--clinical",
            # Half through the FHIR NDJSON export, half through the manifest's record.
            str(cohort / "fhir" if index % 2 else cohort),
            "--patient",
            patient,
            "--bundle",
            str(bundle),
            "--out",
            str(out),
        ]
        # SHAP is slow: explain one patient only, the probabilities do not depend on it.
        result = runner.invoke(app, args if index == 0 else [*args, "--no-explain"])
        assert result.exit_code == 0, result.output
        (written,) = out.glob("prediction-*.json")
        prediction = json.loads(written.read_text())
        assert patient not in written.name
        kinds.add(prediction["ensemble_kind"])
        expected = served[served["patient_id"] == patient].set_index("endpoint")
        for endpoint in prediction["endpoints"]:
            row = expected.loc[endpoint["endpoint"]]
            assert endpoint["probability"] == pytest.approx(row["probability"], abs=1e-9)
            assert endpoint["model"] == row["model"]
            assert endpoint["risk"] == ("high" if endpoint["probability"] < 0.5 else "low")
        assert prediction["ensemble_kind"] == expected["kind"].iloc[0]
        if index == 0:
            assert all(len(e["top_features"]) == 5 for e in prediction["endpoints"])
    assert "longitudinal" in kinds


def test_predict_applies_the_configured_rules_and_says_they_differ(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A site that uses no follow-up CT gets the baseline ensemble, and is told to retrain."""
    cohort, bundle, report = trained
    served = pd.read_csv(report / "served_predictions.csv", dtype={"patient_id": str})
    patient = sorted(served[served["kind"] == "longitudinal"]["patient_id"])[0]
    config = tmp_path / "icibenefit.toml"
    config.write_text("timeline_max_followups = 0\n")
    args = ["--config", str(config), "predict", "--dicom", str(cohort / "dicom")]
    args += ["--clinical", str(cohort), "--patient", patient, "--bundle", str(bundle)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--no-explain"])
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "out").glob("prediction-*.json")
    prediction = json.loads(written.read_text())
    assert prediction["ensemble_kind"] == "baseline"
    assert len(prediction["imaging"]) == 1
    assert any(
        d.startswith("clinical rules differ") and "timeline_max_followups = 0" in d
        for d in prediction["decisions"]
    )


def test_tampered_bundle_refuses_to_load(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from icibenefit.pipeline.inference import open_bundle

    _, bundle, _ = trained
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    target = next((copy / "estimators").glob("*.skops"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ModelBundleError, match="integrity"):
        open_bundle(copy)
