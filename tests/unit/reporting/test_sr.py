import highdicom as hd
import pytest
from pydicom.uid import RTStructureSetStorage
from unit.reporting.factories import Case

from icibenefit.errors import ReportError
from icibenefit.reporting import identity
from icibenefit.reporting.sr import (
    build_sr,
    probability_concept,
    read_probabilities,
    risk_concept,
    summary_text,
)


@pytest.fixture(scope="module")
def case() -> Case:
    return Case()


def _groups(sr):
    return hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_volumetric_roi_measurement_groups()


def test_probabilities_read_back_with_highdicom(case):
    sr = build_sr(case.prediction({"pfs6": 0.731, "os12": 0.2}), case.images, case.segmentations)
    assert read_probabilities(sr) == {"pfs6": pytest.approx(0.731), "os12": pytest.approx(0.2)}


def test_one_group_per_endpoint_with_tracking_and_segment(case):
    prediction = case.prediction({"pfs6": 0.8, "pfs9": 0.3})
    sr = build_sr(prediction, case.images, case.segmentations)
    groups = {g.tracking_identifier: g for g in _groups(sr)}
    assert {"PFS6 benefit prediction", "PFS9 benefit prediction"} <= set(groups)
    pfs6, pfs9 = groups["PFS6 benefit prediction"], groups["PFS9 benefit prediction"]
    assert pfs6.tracking_uid != pfs9.tracking_uid
    latest_seg = case.timepoints[-1].segmentation_sop_uid
    assert (
        pfs6.referenced_segment[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == latest_seg
    )
    risks = [
        [q.value.meaning for q in group.get_qualitative_evaluations(name=risk_concept(name))]
        for group, name in ((pfs6, "pfs6"), (pfs9, "pfs9"))
    ]
    assert risks == [["Low risk"], ["High risk"]]
    [measurement] = pfs6.get_measurements(name=probability_concept("pfs6"))
    assert measurement.unit.value == "{probability}"
    assert measurement.value == pytest.approx(0.8)


def test_time_point_context_names_every_timepoint(case):
    sr = build_sr(case.prediction(), case.images, case.segmentations)
    tumour_groups = [g for g in _groups(sr) if g.tracking_identifier.startswith("Tumour")]
    assert [g.tracking_identifier for g in tumour_groups] == [
        "Tumour (baseline)",
        "Tumour (followup1)",
        "Tumour (followup2)",
    ]
    assert len({g.tracking_uid for g in tumour_groups}) == 1  # one lesion tracked over time
    orders = [
        next(m.value for m in g.get_measurements() if m.name.value == "126073")
        for g in tumour_groups
    ]
    assert orders == [1, 2, 3]


def test_report_lives_in_study_of_latest_ct_and_lists_all_images(case):
    sr = build_sr(case.prediction(), case.images, case.segmentations)
    assert sr.StudyInstanceUID == case.timepoints[-1].study_uid
    assert sr.PatientID == case.patient_id
    referenced = {
        item.ReferencedSOPInstanceUID
        for seq in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence")
        for study in sr.get(seq, [])
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert {str(ds.SOPInstanceUID) for ds in case.images} <= referenced


def test_uids_are_deterministic_for_the_same_inputs(case):
    first = build_sr(case.prediction(), case.images, case.segmentations)
    again = build_sr(case.prediction(), list(reversed(case.images)), case.segmentations)
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (
        again.SOPInstanceUID,
        again.SeriesInstanceUID,
    )


def test_new_input_set_gets_new_instance_in_same_series(case):
    first = build_sr(case.prediction(), case.images, case.segmentations)
    more_labs = build_sr(
        case.prediction(labs=("obs-wbc-1", "obs-neu-1", "obs-lym-1", "obs-late")),
        case.images,
        case.segmentations,
    )
    fewer_images = [
        *case.timepoints[:-1],
        case.timepoints[-1].model_copy(
            update={"image_sop_uids": case.timepoints[-1].image_sop_uids[:-1]}
        ),
    ]
    fewer = build_sr(case.prediction(timepoints=fewer_images), case.images, case.segmentations)
    assert len({first.SOPInstanceUID, more_labs.SOPInstanceUID, fewer.SOPInstanceUID}) == 3
    assert first.SeriesInstanceUID == more_labs.SeriesInstanceUID == fewer.SeriesInstanceUID


def test_predecessor_documents_sequence_names_the_first_sr(case):
    first = build_sr(case.prediction(), case.images, case.segmentations)
    second = build_sr(
        case.prediction(labs=("late",)), case.images, case.segmentations, predecessor=first
    )
    [study] = second.PredecessorDocumentsSequence
    [series] = study.ReferencedSeriesSequence
    [item] = series.ReferencedSOPSequence
    assert item.ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert study.StudyInstanceUID == first.StudyInstanceUID
    assert second.InstanceNumber == first.InstanceNumber + 1
    assert "PredecessorDocumentsSequence" not in first


def test_demonstration_notice_only_for_demonstration_models(case):
    demo = build_sr(case.prediction(demonstration=True), case.images, case.segmentations)
    real = build_sr(case.prediction(demonstration=False), case.images, case.segmentations)
    assert "NOT FOR CLINICAL USE" in str(demo.ContentSequence[-1].ContentSequence[0].TextValue)
    assert "not for clinical use" in demo.SeriesDescription
    assert "NOT FOR CLINICAL USE" not in str(real.ContentSequence[-1].ContentSequence[0].TextValue)
    assert len(real.ContentSequence[-1].ContentSequence) == 1


def test_contributing_equipment_names_the_plugin_as_processing_equipment(case):
    sr = build_sr(case.prediction(), case.images, case.segmentations)
    ours = [
        item
        for item in sr.ContributingEquipmentSequence
        if item.Manufacturer == identity.MANUFACTURER
    ]
    assert len(ours) == 1
    assert ours[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert "2024.1.0" in ours[0].SoftwareVersions


def test_summary_is_readable(case):
    text = summary_text(case.prediction({"pfs6": 0.73}))
    assert "progression-free at 6 months 0.73 -> low risk" in text
    assert "delta_volume (+0.110)" in text.split("nlr_baseline")[0]  # strongest first
    assert "followup2: 2024-05-25 (day +85" in text


def test_missing_images_are_an_error(case):
    with pytest.raises(ReportError, match="followup2"):
        build_sr(case.prediction(), case.images[:-1], case.segmentations)
    with pytest.raises(ReportError, match="segmentation"):
        build_sr(case.prediction(), case.images, case.segmentations[:1])


def test_rtstruct_timepoint_references_its_ct_images(case):
    last = case.timepoints[-1].model_copy(
        update={
            "segmentation_sop_class_uid": RTStructureSetStorage,
            "segmentation_sop_uid": "1.2.3",
        }
    )
    prediction = case.prediction(timepoints=[*case.timepoints[:-1], last])
    sr = build_sr(prediction, case.images, case.segmentations[:-1])
    content = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    image_groups = content.get_image_measurement_groups()
    assert {g.tracking_identifier for g in image_groups} >= {"PFS6 benefit prediction"}
    assert read_probabilities(sr) == {"pfs6": pytest.approx(0.73), "pfs9": pytest.approx(0.41)}


def test_prediction_without_imaging_is_an_error(case):
    with pytest.raises(ReportError):
        build_sr(case.prediction(timepoints=[]), case.images, case.segmentations)
