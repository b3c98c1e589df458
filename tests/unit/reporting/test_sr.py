import highdicom as hd
import pytest
from pydicom import Dataset
from pydicom.sr.codedict import codes
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
    # Issue 15: one tracking UID per tracked finding (the tumour as seen on one
    # CT), so viewers that merge groups by UID (OHIF) keep the timepoints apart.
    assert len({g.tracking_uid for g in tumour_groups}) == 3
    identifiers = [
        next(item.TextValue for item in g if item.ConceptNameCodeSequence[0].CodeValue == "126070")
        for g in (group[0].ContentSequence for group in tumour_groups)
    ]
    assert identifiers == ["T1-baseline-20240220", "T2-followup1-20240410", "T3-followup2-20240525"]


def test_tracking_uids_are_stable_across_reruns_and_distinct_per_finding(case):
    first = build_sr(case.prediction(), case.images, case.segmentations)
    rerun = build_sr(case.prediction(labs=("late",)), case.images, case.segmentations)
    uids = [{g.tracking_identifier: g.tracking_uid for g in _groups(sr)} for sr in (first, rerun)]
    assert uids[0] == uids[1]
    assert len(set(uids[0].values())) == len(uids[0]) == 5


def test_procedure_reported_is_from_cid_100(case):
    sr = build_sr(case.prediction(), case.images, case.segmentations)
    [procedure] = [
        item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    code = procedure.ConceptCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("25045-6", "LN")


def test_private_coding_scheme_is_declared(case):
    sr = build_sr(case.prediction(), case.images, case.segmentations)
    declared = {item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence}
    used = set()

    def walk(items):
        for item in items:
            for seq in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
                for code in item.get(seq, []):
                    used.add(code.CodingSchemeDesignator)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    private = {scheme for scheme in used if scheme.startswith("99")}
    assert private == {identity.CODING_SCHEME}
    assert private <= declared


def _scoords(group):
    """SCOORDs under the NUM items of a group: what OHIF draws on the CT."""
    return [
        child
        for item in group[0].ContentSequence
        if item.ValueType == "NUM"
        for child in item.get("ContentSequence", [])
        if child.ValueType == "SCOORD"
    ]


def test_every_measurement_group_is_placed_on_a_ct_image(case):
    """OHIF 3.13 crashes on a group whose measurements have no SCOORD (issue 15)."""
    sr = build_sr(case.prediction(), case.images, case.segmentations)
    ct_uids = {str(ds.SOPInstanceUID) for ds in case.images}
    groups = _groups(sr)
    assert len(groups) == 5
    for group in groups:
        [scoord] = _scoords(group)
        assert scoord.RelationshipType == "INFERRED FROM"
        assert scoord.GraphicType == "POLYLINE"
        assert scoord.GraphicData[:2] == scoord.GraphicData[-2:]  # closed
        [image] = scoord.ContentSequence
        assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in ct_uids
    # No NUM without a measured value (OHIF formats every MeasuredValueSequence).
    for group in groups:
        for item in group[0].ContentSequence:
            if item.ValueType == "NUM":
                assert len(item.MeasuredValueSequence) == 1


def test_tumour_volume_is_measured_from_the_seg(case):
    sr = build_sr(case.prediction(), case.images, case.segmentations)
    tumour = next(g for g in _groups(sr) if g.tracking_identifier == "Tumour (baseline)")
    [volume] = tumour.get_measurements(name=codes.SCT.Volume)
    # factories.make_seg: a 4 x 4 voxel square on 3 slices of 1 x 1 x 2 mm.
    assert volume.value == pytest.approx(4 * 4 * 3 * 2.0)
    assert volume.unit.value == "mm3"


def test_headers_only_still_reports_every_endpoint_on_an_image(case):
    """Without SEG pixel data (the runner reads headers) only endpoint groups remain."""
    headers = [_without_pixels(ds) for ds in case.segmentations]
    sr = build_sr(case.prediction(), case.images, headers)
    groups = _groups(sr)
    assert {g.tracking_identifier for g in groups} == {
        "PFS6 benefit prediction",
        "PFS9 benefit prediction",
    }
    for group in groups:
        [scoord] = _scoords(group)
        assert list(scoord.GraphicData) == [0, 0, 16, 0, 16, 16, 0, 16, 0, 0]
    assert read_probabilities(sr) == {"pfs6": pytest.approx(0.73), "pfs9": pytest.approx(0.41)}


def _without_pixels(ds):
    copy = Dataset()
    copy.update({elem.tag: elem for elem in ds if elem.keyword != "PixelData"})
    return copy


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


def test_endpoint_groups_come_first_with_a_comment_viewers_show(case):
    sr = build_sr(case.prediction({"pfs6": 0.73, "pfs9": 0.41}), case.images, case.segmentations)
    measurements = next(
        item
        for item in sr.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements"
    )
    groups = list(measurements.ContentSequence)
    comments = [
        item.TextValue
        for group in groups[:2]
        for item in group.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121106"
    ]
    assert comments[0].startswith("PFS6: low risk, P(benefit) 0.73; model icibenefit-demo 2024.1.0")
    assert comments[1].startswith("PFS9: high risk, P(benefit) 0.41")
    assert all(c.endswith("demonstration model, not for clinical use") for c in comments)
