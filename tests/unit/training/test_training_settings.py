"""Settings reach training: the clinical rules and the LIDC-IDRI image folder."""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from icibenefit.domain import ClinicalRecord
from icibenefit.pipeline.rules import PipelineRules
from icibenefit.pipeline.timeline import TimelineRules
from icibenefit.training.cohort_manifest import Outcomes
from icibenefit.training.dataset import Cohort, CohortPatient
from icibenefit.training.deep_features import CnnBudget, _pretrained
from icibenefit.training.features import extract
from tests.peers.dicom_objects import ct_series, seg_from_mask, sphere_hu


class StopError(Exception):
    """Raised by a faked boundary once it has seen its arguments."""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ICIBENEFIT_"):
            monkeypatch.delenv(name)


def test_train_command_passes_the_settings_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icibenefit.cli import app

    lidc = tmp_path / "LIDC-IDRI"
    config = tmp_path / "icibenefit.toml"
    config.write_text(
        f'lidc_image_dir = "{lidc}"\n'
        "timeline_baseline_window_days = 45\n"
        'primary_tumour_labels = ["GTV-1"]\n'
    )
    calls: list[dict[str, Any]] = []

    def fake_train(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return SimpleNamespace(bundle=tmp_path / "b", report_dir=tmp_path / "r")

    monkeypatch.setattr("icibenefit.training.trainer.train", fake_train)
    result = CliRunner().invoke(
        app,
        ["--config", str(config), "train", "--cohort", str(tmp_path), "--out", str(tmp_path / "b")],
    )
    assert result.exit_code == 0, result.output
    (kwargs,) = calls
    assert kwargs["lidc_image_dir"] == lidc
    assert kwargs["rules"].timeline.baseline_window_days == 45
    assert kwargs["rules"].primary_labels == ("GTV-1",)


def test_trainer_hands_rules_and_lidc_folder_to_feature_extraction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icibenefit.training import trainer

    seen: dict[str, Any] = {}

    def fake_extract(cohort: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise StopError

    monkeypatch.setattr(trainer, "load_cohort", lambda path: SimpleNamespace(patients=()))
    monkeypatch.setattr(trainer, "extract_features", fake_extract)
    rules = PipelineRules(primary_labels=("GTV-1",))
    with pytest.raises(StopError):
        trainer.train(tmp_path, tmp_path / "bundle", rules=rules, lidc_image_dir=tmp_path / "lidc")
    assert seen["rules"] is rules
    assert seen["lidc_image_dir"] == tmp_path / "lidc"


def test_demo_trains_its_bundle_under_the_settings(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icibenefit import demo

    seen: dict[str, Any] = {}

    def fake_train(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise StopError

    monkeypatch.setattr("icibenefit.training.trainer.train", fake_train)
    settings = make_settings(series_priority=["thickness"], lidc_image_dir="/data/LIDC-IDRI")
    with pytest.raises(StopError):
        demo.prepare_bundle(settings, lambda: settings.data_dir / "cohort", lambda text: None)
    assert seen["rules"] == PipelineRules.from_settings(settings)
    assert seen["rules"].timeline.series_rules.priority == ("thickness",)
    assert seen["lidc_image_dir"] == Path("/data/LIDC-IDRI")
    assert seen["cnn_budget"] == CnnBudget.quick(), "the demo spends the quick CNN budget"


@pytest.mark.parametrize("cached", [False, True])
def test_pretraining_uses_the_lidc_image_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    configs: list[Any] = []

    def fake_pretrain(config: Any, seed: int, *cache: Any) -> str:
        configs.append(config)
        return "weights"

    # The package re-exports pretrain() under its module's name: patch both by object.
    module = importlib.import_module("icibenefit.training.cnn.pretrain")
    monkeypatch.setattr(module, "pretrain_cached", fake_pretrain)
    monkeypatch.setattr(
        importlib.import_module("icibenefit.training.cnn"), "pretrain", fake_pretrain
    )
    lidc = tmp_path / "LIDC-IDRI"
    lidc.mkdir()
    cache_dir = tmp_path / "cache" if cached else None
    assert _pretrained(cache_dir, 0, CnnBudget.quick(), lidc) == "weights"
    assert configs[0].lidc_image_dir == lidc
    assert _pretrained(cache_dir, 0, CnnBudget.quick()) == "weights"
    assert configs[1].lidc_image_dir is None


def test_extraction_plans_timepoints_under_the_given_rules(tmp_path: Path) -> None:
    """The rules decide the training timeline (here: a baseline window too short for the CT)."""
    spacing = (0.8, 0.8, 2.0)
    hu, mask = sphere_hu((8, 24, 24), (4.0, 12.0, 12.0), 4.0, spacing=spacing)
    series = ct_series(hu, spacing=spacing)  # a CT of 2024-01-01
    folder = tmp_path / "P1"
    folder.mkdir()
    for index, ds in enumerate(series):
        ds.save_as(folder / f"{index}.dcm", enforce_file_format=True)
    seg_from_mask(series, {"primary tumour": mask}).save_as(folder / "seg.dcm")
    record = ClinicalRecord(patient_id="P1", treatment_start=dt.date(2024, 1, 5))
    outcomes = Outcomes(pfs_months=8.0, pfs_event=True, os_months=20.0, os_event=False)
    cohort = Cohort(tmp_path, (CohortPatient("P1", record, outcomes, folder),), True, "f")
    rules = PipelineRules(timeline=TimelineRules(baseline_window_days=3))
    extracted = extract(
        cohort,
        split=lambda features: set(),
        want_deep=False,
        seed=0,
        workers=1,
        cache_dir=None,
        progress=False,
        rules=rules,
    )
    assert extracted.rules is rules
    assert extracted.features["P1"].imaging == ()
    assert any("within 3 days before T0" in d for d in extracted.features["P1"].decisions)
