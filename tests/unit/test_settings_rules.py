"""The clinical-rule settings: defaults, sources (file, environment, override), validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from icibenefit.errors import ConfigurationError
from icibenefit.pipeline.rules import PipelineRules
from icibenefit.pipeline.series_selection import SeriesSelectionRules
from icibenefit.pipeline.timeline import TimelineRules
from icibenefit.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ICIBENEFIT_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_pipelines_own_rules() -> None:
    """Unconfigured settings must not change what the pipeline did before they existed."""
    rules = PipelineRules.from_settings(load_settings())
    assert rules == PipelineRules()
    assert rules.timeline == TimelineRules()
    assert rules.timeline.series_rules == SeriesSelectionRules()


def test_file_then_environment_then_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "icibenefit.toml"
    config.write_text(
        "timeline_baseline_window_days = 90\n"
        "timeline_followup_window_days = 150\n"
        'timeline_chest_body_parts = ["chest", "Upper Body"]\n'
        'series_priority = ["thickness", "kernel"]\n'
        'primary_tumour_labels = ["GTV-1", "lesion, main"]\n'
        "series_require_axial = false\n"
    )
    monkeypatch.setenv("ICIBENEFIT_TIMELINE_FOLLOWUP_WINDOW_DAYS", "100")
    monkeypatch.setenv("ICIBENEFIT_SERIES_MIN_IMAGES", "12")
    monkeypatch.setenv("ICIBENEFIT_SERIES_SHARP_KERNELS", "LUNG, ^B7")
    # A JSON array keeps the comma of a regular-expression quantifier.
    monkeypatch.setenv("ICIBENEFIT_SERIES_SOFT_TISSUE_KERNELS", '["^B[0-9]{1,2}f$", "SOFT"]')
    settings = load_settings(config, series_min_images=8)
    assert settings.timeline_baseline_window_days == 90  # file
    assert settings.timeline_followup_window_days == 100  # environment over file
    assert settings.series_min_images == 8  # override over environment
    assert settings.timeline_chest_body_parts == ["CHEST", "UPPERBODY"]
    assert settings.series_priority == ["thickness", "kernel"]
    assert settings.primary_tumour_labels == ["GTV-1", "lesion, main"]
    assert settings.series_sharp_kernels == ["LUNG", "^B7"]
    assert settings.series_soft_tissue_kernels == ["^B[0-9]{1,2}f$", "SOFT"]

    rules = PipelineRules.from_settings(settings)
    assert rules.timeline.baseline_window_days == 90
    assert rules.timeline.followup_window_days == 100
    assert rules.timeline.chest_body_parts == ("CHEST", "UPPERBODY")
    assert rules.timeline.series_rules.min_images == 8
    assert rules.timeline.series_rules.require_axial is False
    assert rules.timeline.series_rules.priority == ("thickness", "kernel")
    assert rules.timeline.series_rules.soft_tissue_kernels == ("^B[0-9]{1,2}f$", "SOFT")
    assert rules.primary_labels == ("GTV-1", "lesion, main")


def test_environment_list_is_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICIBENEFIT_PRIMARY_TUMOUR_LABELS", " GTVp , primary,, ")
    monkeypatch.setenv("ICIBENEFIT_SERIES_PRIORITY", "thickness")
    settings = load_settings()
    assert settings.primary_tumour_labels == ["GTVp", "primary"]
    assert settings.series_priority == ["thickness"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TIMELINE_BASELINE_WINDOW_DAYS", "-1", "0 or more"),
        ("TIMELINE_FOLLOWUP_WINDOW_DAYS", "0", "follow-up starts the day after"),
        ("TIMELINE_MAX_FOLLOWUPS", "3", "less than or equal to 2"),
        ("TIMELINE_CHEST_BODY_PARTS", " , ", "at least one BodyPartExamined"),
        ("SERIES_MIN_IMAGES", "1", "greater than or equal to 2"),
        ("SERIES_SOFT_TISSUE_KERNELS", "B30,(B31", "invalid regular expression '(B31'"),
        ("SERIES_SHARP_KERNELS", '["LUNG"', "not a JSON array"),
        ("SERIES_PRIORITY", "kernel,kernel", "each once"),
        ("SERIES_PRIORITY", "kernel,size", "'kernel' or 'thickness'"),
        ("PRIMARY_TUMOUR_LABELS", ",", "at least one primary-tumour label"),
    ],
)
def test_invalid_rules_name_the_setting_and_why(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"ICIBENEFIT_{variable}", value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    text = str(caught.value)
    assert f"(ICIBENEFIT_{variable})" in text
    assert message in text


def test_invalid_rule_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "icibenefit.toml"
    config.write_text("primary_tumour_labels = []\n")
    with pytest.raises(ConfigurationError, match="primary_tumour_labels"):
        load_settings(config)
