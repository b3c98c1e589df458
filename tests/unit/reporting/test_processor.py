"""The processor seam: lazy wiring, bundle reopened when the active one changes."""

from types import SimpleNamespace

import pytest

from icibenefit.errors import ConfigurationError
from icibenefit.listener.jobs import load_processor_factory, resolve_processor_factory
from icibenefit.reporting import processor as processor_module
from icibenefit.reporting.runner import ReportingProcessor


def test_listener_finds_and_builds_the_reporting_processor(make_settings):
    settings = make_settings()  # neither a FHIR source nor a bundle: still builds
    name = resolve_processor_factory(settings)
    assert name == "icibenefit.reporting.processor:build_processor"
    built = load_processor_factory(name)(settings)
    assert isinstance(built, ReportingProcessor)
    with pytest.raises(ConfigurationError, match="fhir_base_url"):
        built.records.clinical_record("anyone")


def test_bundle_is_reopened_only_when_the_configured_one_changes(make_settings, tmp_path):
    opened = []

    class FakeBundle:
        def __init__(self, path):
            self.bundle = SimpleNamespace(manifest=SimpleNamespace(name="m", version=path.name))
            self.calls = []

        def predict(self, files, record):
            self.calls.append((files, record))
            return self.bundle.manifest.version

    bundles = []

    def fake_open(path, *, rules):
        assert rules.timeline.baseline_window_days == 45  # the settings' rules, passed on
        opened.append(path)
        bundles.append(FakeBundle(path))
        return bundles[-1]

    current = {"path": tmp_path / "v1"}
    predictor = processor_module.ActiveBundlePredictor(
        make_settings(timeline_baseline_window_days=45),
        opener=fake_open,
        locate=lambda settings: current["path"],
    )
    assert predictor("record", [tmp_path / "b.dcm", tmp_path / "a.dcm"]) == "v1"
    assert predictor("record", []) == "v1"
    current["path"] = tmp_path / "v2"  # a promotion
    assert predictor("record", []) == "v2"
    assert opened == [tmp_path / "v1", tmp_path / "v2"]
    files, record = bundles[0].calls[0]
    assert files == [str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm")]
    assert record == "record"
