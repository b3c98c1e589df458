"""Timeline: windows, dropped follow-ups, series choice, labs, header indexing."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from icibenefit.domain import Analyte, ClinicalRecord, LabPanel, LabTimepoint, LabValue
from icibenefit.errors import TimelineError
from icibenefit.pipeline.series_selection import SeriesSelectionRules, SeriesSummary
from icibenefit.pipeline.timeline import (
    SeriesRecord,
    TimelineRules,
    build_timeline,
    records_from_headers,
)
from tests.peers.dicom_objects import CtHeader, ct_series, rtstruct_from_mask, seg_from_mask

T0 = dt.date(2024, 3, 1)


def _ct(
    days: int,
    *,
    seg: bool = True,
    study: str | None = None,
    series: str | None = None,
    kernel: str = "B30f",
    thickness: float = 1.0,
    body_part: str = "CHEST",
) -> SeriesRecord:
    study = study or f"1.2.3.{days + 1000}"
    series = series or f"{study}.{kernel}.{thickness}"
    return SeriesRecord(
        study_uid=study,
        series_uid=series,
        study_date=T0 + dt.timedelta(days=days),
        summary=SeriesSummary(
            series_uid=series,
            study_uid=study,
            modality="CT",
            n_images=100,
            series_description="Thorax",
            convolution_kernel=kernel,
            slice_thickness_mm=thickness,
            axial=True,
            body_part=body_part,
        ),
        segmentation_sop_uid=f"{series}.seg" if seg else None,
        segmentation_key=f"{series}.dcm" if seg else None,
        instance_keys=(f"{series}/1.dcm",),
    )


def test_baseline_is_the_latest_ct_in_the_window_and_followups_are_ordered() -> None:
    records = [_ct(-90), _ct(-45), _ct(-10), _ct(0 + 80), _ct(40), _ct(100)]
    timeline = build_timeline(records, T0)
    assert timeline.baseline.days_from_treatment_start == -10
    assert [e.days_from_treatment_start for e in timeline.followups] == [40, 80]
    assert [e.label for e in timeline.entries] == ["baseline", "followup1", "followup2"]
    text = "\n".join(timeline.decisions)
    assert "(-90 days) dropped: outside the windows" in text
    assert "CT of 2024-01-16 not used: a later baseline CT exists" in text  # -45 days
    assert "not used: only 2 follow-ups are used" in text  # +100 days
    assert timeline.baseline.instance_keys == (f"{records[2].series_uid}/1.dcm",)


def test_no_baseline_in_the_window_is_a_timeline_error() -> None:
    with pytest.raises(TimelineError, match="no baseline CT") as error:
        build_timeline([_ct(-61), _ct(30)], T0)
    assert "(-61 days) dropped: outside the windows" in str(error.value)
    with pytest.raises(TimelineError, match="no tumour segmentation"):
        build_timeline([_ct(-5, seg=False)], T0)


def test_window_edges() -> None:
    timeline = build_timeline([_ct(-60), _ct(0), _ct(122), _ct(123)], T0)
    assert timeline.baseline.days_from_treatment_start == 0  # T0 itself is baseline
    assert [e.days_from_treatment_start for e in timeline.followups] == [122]
    assert any("(+123 days) dropped: outside the windows" in d for d in timeline.decisions)
    shorter = TimelineRules(followup_window_days=100)
    assert build_timeline([_ct(-1), _ct(110)], T0, shorter).followups == ()


def test_followup_whose_tumour_is_gone_is_dropped() -> None:
    timeline = build_timeline([_ct(-7), _ct(42, seg=False), _ct(84)], T0)
    assert [e.days_from_treatment_start for e in timeline.followups] == [84]
    assert timeline.followups[0].label == "followup1"
    assert any(
        "(+42 days) dropped as follow-up: tumour no longer visible" in d for d in timeline.decisions
    )
    only_gone = build_timeline([_ct(-7), _ct(42, seg=False)], T0)
    assert only_gone.followups == ()
    assert "baseline imaging only" in only_gone.decisions[-1]


def test_baseline_without_segmentation_falls_back_to_an_older_ct() -> None:
    timeline = build_timeline([_ct(-30), _ct(-3, seg=False)], T0)
    assert timeline.baseline.days_from_treatment_start == -30
    assert any(
        "(-3 days) dropped as baseline: no tumour segmentation" in d for d in timeline.decisions
    )


def test_two_ct_series_in_one_study() -> None:
    study = "1.2.3.99"
    soft = _ct(-5, study=study, kernel="B30f", thickness=2.0)
    sharp_thin = _ct(-5, study=study, kernel="B70f", thickness=0.6)
    soft_thin_unsegmented = _ct(-5, study=study, kernel="B31f", thickness=1.0, seg=False)
    timeline = build_timeline([sharp_thin, soft, soft_thin_unsegmented], T0)
    assert timeline.baseline.series_uid == soft.series_uid
    text = "\n".join(timeline.decisions)
    assert f"series {soft_thin_unsegmented.series_uid} not used: no tumour segmentation" in text
    assert f"series {soft.series_uid} chosen" in text
    assert f"series {sharp_thin.series_uid} not chosen" in text
    thinnest = TimelineRules(series_rules=SeriesSelectionRules(priority=("thickness", "kernel")))
    assert (
        build_timeline([sharp_thin, soft], T0, thinnest).baseline.series_uid
        == sharp_thin.series_uid
    )


def test_non_chest_ct_is_dropped_and_empty_body_part_accepted() -> None:
    timeline = build_timeline([_ct(-20, body_part="HEAD"), _ct(-30, body_part="")], T0)
    assert timeline.baseline.days_from_treatment_start == -30
    assert any("not a chest CT (HEAD)" in d for d in timeline.decisions)


def _lab(analyte: Analyte, value: float) -> LabValue:
    return LabValue(
        analyte=analyte,
        value=value,
        unit="10*9/L",
        effective=dt.datetime(2024, 2, 25, 9),
        observation_id=f"obs-{analyte.value}",
    )


def test_missing_labs_do_not_stop_the_imaging_timeline() -> None:
    without_labs = ClinicalRecord(patient_id="P1", treatment_start=T0)
    timeline = build_timeline([_ct(-3), _ct(30)], without_labs)
    assert len(timeline.entries) == 2
    assert "labs baseline: missing (imputed by the model)" in timeline.decisions
    with_baseline = ClinicalRecord(
        patient_id="P1",
        treatment_start=T0,
        labs={
            LabTimepoint.BASELINE: LabPanel(
                timepoint=LabTimepoint.BASELINE,
                values={
                    Analyte.WBC: _lab(Analyte.WBC, 7.0),
                    Analyte.LYMPHOCYTES: _lab(Analyte.LYMPHOCYTES, 1.5),
                },
            )
        },
    )
    decisions = build_timeline([_ct(-3)], with_baseline).decisions
    assert "labs baseline: 2 analytes" in decisions
    assert "labs cycle2: missing (imputed by the model)" in decisions


def test_records_from_headers_attach_seg_and_rtstruct_to_their_series() -> None:
    hu = np.zeros((6, 16, 16))
    mask = np.zeros((6, 16, 16), dtype=bool)
    mask[2:4, 5:10, 5:10] = True
    study_uid = "1.2.826.0.1.3680043.8.498.1"
    first = ct_series(hu, header=CtHeader(study_uid=study_uid, kernel="B30f"))
    second_header = CtHeader(
        study_uid=study_uid, kernel="B70f", frame_of_reference_uid=first[0].FrameOfReferenceUID
    )
    second = ct_series(hu, header=second_header)
    other_study = ct_series(hu)
    seg = seg_from_mask(first, {"primary tumour": mask})
    rt = rtstruct_from_mask(other_study, {"primary tumour": mask})
    headers = [(f"a/{i}.dcm", ds) for i, ds in enumerate(first)]
    headers += [(f"b/{i}.dcm", ds) for i, ds in enumerate(second)]
    headers += [(f"c/{i}.dcm", ds) for i, ds in enumerate(other_study)]
    headers += [("seg.dcm", seg), ("rt.dcm", rt)]
    records = {r.series_uid: r for r in records_from_headers(headers)}
    assert len(records) == 3
    a = records[first[0].SeriesInstanceUID]
    assert a.segmentation_sop_uid == seg.SOPInstanceUID
    assert a.segmentation_key == "seg.dcm"
    assert a.instance_keys == tuple(sorted(f"a/{i}.dcm" for i in range(6)))
    assert a.summary.convolution_kernel == "B30f"
    assert a.study_date == dt.date(2024, 1, 1)
    assert not records[second[0].SeriesInstanceUID].has_segmentation
    assert records[other_study[0].SeriesInstanceUID].segmentation_key == "rt.dcm"
