import datetime as dt

import pytest
from pydicom import Dataset
from unit.reporting.factories import Case

from icibenefit.domain import Analyte, ClinicalRecord, LabPanel, LabTimepoint, LabValue
from icibenefit.errors import ReportError
from icibenefit.reporting import identity
from icibenefit.reporting.key_images import tumour_geometry
from icibenefit.reporting.pdf_report import (
    ENCAPSULATED_PDF_STORAGE,
    build_pdf_report,
    read_pdf,
    report_lines,
)
from icibenefit.reporting.sr import build_sr


@pytest.fixture(scope="module")
def case() -> Case:
    return Case()


@pytest.fixture(scope="module")
def report(case) -> Dataset:
    return build_pdf_report(case.prediction(), case.images, case.segmentations)


def _panels(case, prediction):
    by_series = {}
    for ds in case.images:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    segs = {str(s.SOPInstanceUID): s for s in case.segmentations}
    return [
        (tp, tumour_geometry(by_series[tp.series_uid], segs[tp.segmentation_sop_uid]))
        for tp in sorted(prediction.imaging, key=lambda t: t.study_date)
    ]


def _text(case, prediction, record=None):
    return "\n".join(
        line for _, line in report_lines(prediction, _panels(case, prediction), record)
    )


def test_is_an_encapsulated_pdf_in_the_study_of_the_latest_ct(case, report):
    assert report.SOPClassUID == ENCAPSULATED_PDF_STORAGE
    assert report.Modality == "DOC"
    assert report.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert report.StudyInstanceUID == case.timepoints[-1].study_uid
    assert report.PatientID == case.patient_id
    pdf = read_pdf(report)
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert report.EncapsulatedDocumentLength == len(pdf)
    assert len(report.EncapsulatedDocument) % 2 == 0


def test_uids_and_bytes_are_deterministic_and_differ_from_the_sr(case, report):
    again = build_pdf_report(case.prediction(), list(reversed(case.images)), case.segmentations)
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (
        report.SOPInstanceUID,
        report.SeriesInstanceUID,
    )
    assert read_pdf(again) == read_pdf(report)
    sr = build_sr(case.prediction(), case.images, case.segmentations)
    assert report.SeriesInstanceUID != sr.SeriesInstanceUID
    assert report.SOPInstanceUID != sr.SOPInstanceUID


def test_new_input_set_gets_new_instance_in_same_series(case, report):
    rerun = build_pdf_report(case.prediction(labs=("late",)), case.images, case.segmentations)
    assert rerun.SeriesInstanceUID == report.SeriesInstanceUID
    assert rerun.SOPInstanceUID != report.SOPInstanceUID
    assert rerun.SOPInstanceUID == identity.pdf_instance_uid(case.prediction(labs=("late",)))


def test_states_probabilities_risks_factors_model_and_timeline(case):
    text = _text(case, case.prediction({"pfs6": 0.73, "pfs9": 0.41}))
    assert "PFS6: probability of being progression-free at 6 months 0.73" in text
    assert "LOW RISK" in text
    assert "HIGH RISK" in text
    assert "delta_volume (+0.110)" in text
    assert "icibenefit-demo version 2024.1.0" in text
    assert "CT baseline: 2024-02-20 (day -10), 3 images; tumour volume 0.10 cm3" in text
    assert "CT followup2: 2024-05-25 (day +85)" in text
    assert "Treatment start: 2024-03-01" in text
    assert "obs-wbc-1" in text


def test_demonstration_notice_only_for_demonstration_models(case, report):
    assert identity.DEMONSTRATION_NOTICE in _text(case, case.prediction(demonstration=True))
    assert identity.DEMONSTRATION_NOTICE not in _text(case, case.prediction(demonstration=False))
    assert "NOT FOR CLINICAL USE" in report.DocumentTitle
    real = build_pdf_report(case.prediction(demonstration=False), case.images, case.segmentations)
    assert "NOT FOR CLINICAL USE" not in real.DocumentTitle
    assert "not for clinical use" not in real.SeriesDescription


def test_lab_timeline_from_the_clinical_record(case):
    effective = dt.datetime(2024, 2, 25, 8, 0)
    record = ClinicalRecord(
        patient_id=case.patient_id,
        treatment_start=dt.date(2024, 3, 1),
        labs={
            LabTimepoint.BASELINE: LabPanel(
                timepoint=LabTimepoint.BASELINE,
                values={
                    Analyte.WBC: LabValue(
                        analyte=Analyte.WBC,
                        value=7.1,
                        unit="10*9/L",
                        effective=effective,
                        observation_id="obs-wbc-1",
                    )
                },
            )
        },
    )
    text = _text(case, case.prediction(), record)
    assert "Labs baseline (2024-02-25): wbc 7.1 10*9/L" in text


def test_key_images_reference_the_ct_slices_drawn(case, report):
    drawn = {item.ReferencedSOPInstanceUID for item in report.SourceInstanceSequence}
    assert len(drawn) == 3
    assert drawn <= {str(ds.SOPInstanceUID) for ds in case.images}


def test_headers_only_still_builds_a_report(case):
    def header(ds):
        copy = Dataset()
        copy.update({elem.tag: elem for elem in ds if elem.keyword != "PixelData"})
        return copy

    report = build_pdf_report(
        case.prediction(),
        [header(ds) for ds in case.images],
        [header(ds) for ds in case.segmentations],
    )
    assert read_pdf(report).startswith(b"%PDF-")


def test_prediction_without_imaging_is_an_error(case):
    with pytest.raises(ReportError):
        build_pdf_report(case.prediction(timepoints=[]), case.images, case.segmentations)
