"""Clinical rules set in Settings change what the pipeline chooses (timeline, series, tumour)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from icibenefit.domain import ClinicalRecord
from icibenefit.errors import TimelineError
from icibenefit.pipeline.inference import BundlePredictor, ImagingSettings
from icibenefit.pipeline.normalization import IntensityNormalizer
from icibenefit.pipeline.radiomics_features import load_params
from icibenefit.pipeline.rules import PipelineRules
from icibenefit.pipeline.timeline import build_timeline
from tests.peers.dicom_objects import ct_series, seg_from_mask, sphere_hu
from tests.unit.pipeline.test_timeline import T0, _ct


def _rules(make_settings, **settings: object) -> PipelineRules:
    return PipelineRules.from_settings(make_settings(**settings))


def test_baseline_window_setting_moves_a_study_into_the_baseline(make_settings) -> None:
    records = [_ct(-75), _ct(-20, seg=False), _ct(30)]
    with pytest.raises(TimelineError, match="within 60 days before T0"):
        build_timeline(records, T0, _rules(make_settings).timeline)
    wider = _rules(make_settings, timeline_baseline_window_days=90).timeline
    timeline = build_timeline(records, T0, wider)
    assert timeline.baseline.days_from_treatment_start == -75
    assert [e.days_from_treatment_start for e in timeline.followups] == [30]


def test_followup_window_and_count_settings(make_settings) -> None:
    records = [_ct(-5), _ct(40), _ct(80), _ct(110)]
    default = build_timeline(records, T0, _rules(make_settings).timeline)
    assert [e.days_from_treatment_start for e in default.followups] == [40, 80]
    shorter = _rules(
        make_settings, timeline_followup_window_days=60, timeline_max_followups=1
    ).timeline
    timeline = build_timeline(records, T0, shorter)
    assert [e.days_from_treatment_start for e in timeline.followups] == [40]
    assert any("outside the windows" in d and "+80 days" in d for d in timeline.decisions)


def test_chest_body_part_setting(make_settings) -> None:
    records = [_ct(-30), _ct(-10, body_part="UPPER BODY")]
    default = _rules(make_settings).timeline
    assert build_timeline(records, T0, default).baseline.days_from_treatment_start == -30
    rules = _rules(make_settings, timeline_chest_body_parts=["CHEST", "upper body"]).timeline
    assert build_timeline(records, T0, rules).baseline.days_from_treatment_start == -10


def test_series_settings_change_the_chosen_series(make_settings) -> None:
    study = "1.2.3.77"
    soft_thick = _ct(-5, study=study, kernel="B30f", thickness=3.0)
    sharp_thin = _ct(-5, study=study, kernel="B70f", thickness=0.6)
    site_kernel = _ct(-5, study=study, kernel="XR-SITE", thickness=2.0)
    records = [soft_thick, sharp_thin, site_kernel]

    def chosen(**settings: object) -> str:
        rules = _rules(make_settings, **settings).timeline
        return build_timeline(records, T0, rules).baseline.series_uid

    assert chosen() == soft_thick.series_uid
    assert chosen(series_priority=["thickness", "kernel"]) == sharp_thin.series_uid
    assert chosen(series_soft_tissue_kernels=["^XR-SITE$"]) == site_kernel.series_uid


def test_min_images_setting_excludes_short_series(make_settings) -> None:
    with pytest.raises(TimelineError, match="100 images \\(< 101\\)"):
        build_timeline([_ct(-5)], T0, _rules(make_settings, series_min_images=101).timeline)


def test_rule_differences_against_a_recorded_bundle(make_settings) -> None:
    trained = PipelineRules().as_settings()
    assert PipelineRules().differences(trained) == []
    served = _rules(make_settings, timeline_baseline_window_days=90, series_priority=["thickness"])
    assert served.differences(trained) == [
        "timeline_baseline_window_days = 90 (the model was trained with 60)",
        "series_priority = ['thickness'] (the model was trained with ['kernel', 'thickness'])",
    ]
    # A bundle recorded before the series rules existed: only known rules are compared.
    assert served.differences({"timeline_baseline_window_days": 90}) == []


# --------------------------------------------------------------------------
# The inference path (what the service, predict and training run) on DICOM files

SPACING = (0.8, 0.8, 2.0)
SHAPE = (12, 40, 40)
TREATMENT_START = dt.date(2024, 1, 5)  # the factory's CT is of 2024-01-01: day -4


@pytest.fixture(scope="module")
def two_lesion_study(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A CT and a SEG with a large unlabelled lesion and a small 'GTV-site' one."""
    folder = tmp_path_factory.mktemp("study")
    hu, large = sphere_hu(SHAPE, (6.0, 14.0, 14.0), 6.0, spacing=SPACING)
    small_hu, small = sphere_hu(SHAPE, (6.0, 29.0, 29.0), 3.5, spacing=SPACING)
    series = ct_series(np.where(small, small_hu, hu), spacing=SPACING)
    files = []
    for index, ds in enumerate(series):
        path = folder / f"ct{index:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))
    seg_path = folder / "seg.dcm"
    seg_from_mask(series, {"lesion 1": large, "GTV-site": small}).save_as(seg_path)
    return [*files, str(seg_path)]


def _predictor(rules: PipelineRules) -> BundlePredictor:
    imaging = ImagingSettings(
        normalizer=IntensityNormalizer.from_statistics(
            {"clip_min": -1000.0, "clip_max": 3050.0, "mean": -500.0, "std": 400.0, "n_voxels": 1}
        ),
        radiomics_params=load_params(),
        radiomics_features=("original_shape_VoxelVolume",),
        rules=rules,
    )
    return BundlePredictor(bundle=None, predictor=None, imaging=imaging)


def test_primary_tumour_label_setting_picks_the_segment(
    make_settings, two_lesion_study: list[str]
) -> None:
    record = ClinicalRecord(patient_id="P1", treatment_start=TREATMENT_START)
    default = _predictor(_rules(make_settings)).features(two_lesion_study, record)
    site = _predictor(_rules(make_settings, primary_tumour_labels=["gtv-site"])).features(
        two_lesion_study, record
    )
    assert default.imaging[0].timepoint.segment_number == 1  # no label matches: the largest
    assert site.imaging[0].timepoint.segment_number == 2
    volume = "original_shape_VoxelVolume"
    assert site.imaging[0].radiomics[volume] < default.imaging[0].radiomics[volume] / 3


def test_timeline_setting_reaches_the_inference_path(
    make_settings, two_lesion_study: list[str]
) -> None:
    record = ClinicalRecord(patient_id="P1", treatment_start=TREATMENT_START)
    narrow = _predictor(_rules(make_settings, timeline_baseline_window_days=3))
    features = narrow.features(two_lesion_study, record)
    assert features.imaging == ()
    assert any("within 3 days before T0" in d for d in features.decisions)


def test_differing_rules_are_reported_in_the_decisions(
    make_settings, two_lesion_study: list[str]
) -> None:
    record = ClinicalRecord(patient_id="P1", treatment_start=TREATMENT_START)
    served = _predictor(PipelineRules())
    warned = BundlePredictor(
        served.bundle,
        served.predictor,
        served.imaging,
        ("timeline_baseline_window_days = 90 (the model was trained with 60)",),
    )
    assert not any("differ" in d for d in served.features(two_lesion_study, record).decisions)
    decisions = warned.features(two_lesion_study, record).decisions
    assert decisions[0].startswith("clinical rules differ from the model's training")
    assert "timeline_baseline_window_days = 90" in decisions[0]
