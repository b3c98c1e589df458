"""The job processor against the listener's real outbox (SQLite), with a fake pipeline."""

import json
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from pydicom import dcmread
from unit.reporting.factories import Case

from icibenefit.domain import ClinicalRecord
from icibenefit.listener.outbox import OutboxSender
from icibenefit.persistence import index
from icibenefit.persistence.jobs import InstanceRecord, JobContext, StudyRecord
from icibenefit.persistence.outbox import Outbox
from icibenefit.reporting import runner
from icibenefit.reporting.runner import ReportingProcessor, transaction_bundle


@dataclass
class FakeIndex:
    """The StudyIndex interface over a Case written to disk."""

    studies: list[StudyRecord]
    files: dict[str, list[InstanceRecord]]

    def study(self, study_uid):
        return next(s for s in self.studies if s.study_uid == study_uid)

    def instances(self, study_uid):
        return self.files[study_uid]

    def patient_studies(self, study_uid):
        return sorted(self.studies, key=lambda s: s.study_date)


class FakeRecords:
    def __init__(self, case):
        self.case = case
        self.calls = []

    def clinical_record(self, patient_id, issuer=None):
        self.calls.append((patient_id, issuer))
        return ClinicalRecord(
            patient_id=patient_id,
            fhir_patient_id="fhir-pat-1",
            treatment_start=self.case.prediction().treatment_start,
        )


class FakePredictor:
    """Returns the case's prediction for the timepoints whose files it was given."""

    def __init__(self, case):
        self.case = case
        self.labs = ("obs-1",)
        self.seen: list[list[Path]] = []

    def __call__(self, record, dicom_files):
        self.seen.append(list(dicom_files))
        names = {p.parent.name for p in dicom_files}
        timepoints = [tp for tp in self.case.timepoints if tp.study_uid in names]
        return self.case.prediction(timepoints=timepoints, labs=self.labs)


@pytest.fixture(scope="module")
def shared_case():
    return Case()


@pytest.fixture
def setup(request, tmp_path, make_settings, shared_case):
    case = shared_case
    # The SR-only tests pin dicom_reports; the PDF tests below ask for theirs.
    dicom_reports = getattr(request, "param", "sr")
    settings = make_settings(data_dir=tmp_path / "data", dicom_reports=dicom_reports)
    studies, files = [], {}
    for tp in case.timepoints:
        folder = tmp_path / "store" / tp.study_uid
        folder.mkdir(parents=True)
        records = []
        datasets = [ds for ds in case.images if ds.StudyInstanceUID == tp.study_uid]
        datasets += [ds for ds in case.segmentations if ds.StudyInstanceUID == tp.study_uid]
        for ds in datasets:
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            records.append(
                InstanceRecord(
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    series_uid=str(ds.SeriesInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    modality=str(ds.Modality),
                    path=path,
                )
            )
        files[tp.study_uid] = records
        studies.append(
            StudyRecord(
                study_uid=tp.study_uid,
                patient_id=case.patient_id,
                patient_id_hash="h",
                study_date=tp.study_date.strftime("%Y%m%d"),
                instances=len(records),
            )
        )
    conn = index.connect(settings.data_dir)
    fake_index = FakeIndex(studies, files)
    records = FakeRecords(case)
    predictor = FakePredictor(case)
    processor = ReportingProcessor(settings, records, predictor)

    def job(study_uid, version=1, job_id=1):
        return JobContext(
            settings=settings,
            job_id=job_id,
            study_uid=study_uid,
            version=version,
            attempt=1,
            index=fake_index,
            outbox=Outbox(conn, settings),
        )

    with closing(conn):
        yield case, settings, conn, processor, predictor, job


def _items(conn):
    return conn.execute("SELECT kind, dedup_key, study_uid FROM outbox ORDER BY id").fetchall()


def test_one_sr_and_one_fhir_transaction_per_run(setup):
    case, settings, conn, processor, predictor, job = setup
    latest = case.timepoints[-1].study_uid
    processor.process(job(latest))
    items = _items(conn)
    assert [row["kind"] for row in items] == ["dicom", "fhir"]
    assert all(row["study_uid"] == latest for row in items)
    assert len(predictor.seen[-1]) == len(case.images) + len(case.segmentations)

    OutboxSender(conn, settings).deliver_due()
    [sr_file] = (settings.data_dir / "outbox" / "dicom").glob("*.dcm")
    sr = dcmread(sr_file)
    assert sr.StudyInstanceUID == latest
    assert sr.Modality == "SR"
    [fhir_file] = (settings.data_dir / "outbox" / "fhir").glob("*.json")
    request = json.loads(fhir_file.read_text())
    assert request["method"] == "POST"
    bundle = request["body"]
    assert Bundle.model_validate(bundle).type == "transaction"
    risk = bundle["entry"][1]["resource"]
    assert risk["subject"] == {"reference": "Patient/fhir-pat-1"}
    assert risk["performer"]["reference"] == bundle["entry"][0]["fullUrl"]


def test_baseline_job_uses_only_studies_up_to_its_date(setup):
    case, _, conn, processor, predictor, job = setup
    processor.process(job(case.timepoints[0].study_uid))
    baseline_files = {p.parent.name for p in predictor.seen[-1]}
    assert baseline_files == {case.timepoints[0].study_uid}
    sr_key = _items(conn)[0]["dedup_key"]
    assert sr_key.startswith("dicom:")


def test_retry_queues_nothing_new(setup):
    case, _, conn, processor, _, job = setup
    latest = case.timepoints[-1].study_uid
    processor.process(job(latest))
    processor.process(job(latest))
    assert len(_items(conn)) == 2


def test_rerun_with_new_inputs_names_predecessor_and_updates_same_risk_assessment(setup):
    case, settings, conn, processor, predictor, job = setup
    latest = case.timepoints[-1].study_uid
    processor.process(job(latest, version=1, job_id=1))
    predictor.labs = ("obs-1", "obs-late")
    processor.process(job(latest, version=2, job_id=2))
    items = _items(conn)
    assert [row["kind"] for row in items] == ["dicom", "fhir", "dicom", "fhir"]
    OutboxSender(conn, settings).deliver_due()
    srs = sorted(
        (dcmread(p) for p in (settings.data_dir / "outbox" / "dicom").glob("*.dcm")),
        key=lambda ds: ds.InstanceNumber,
    )
    assert [ds.InstanceNumber for ds in srs] == [1, 2]
    first, second = srs
    named = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert named.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    urls = [
        json.loads(p.read_text())["body"]["entry"][1]["request"]["url"]
        for p in sorted((settings.data_dir / "outbox" / "fhir").glob("*.json"))
    ]
    assert len(urls) == 2
    assert urls[0] == urls[1]
    assert urls[0].startswith("RiskAssessment?identifier=")


def test_clinical_only_prediction_gets_a_risk_assessment_without_sr(setup):
    case, _, conn, processor, predictor, job = setup
    predictor.case = Case(n_followups=0)
    predictor.case.timepoints = []
    processor.process(job(case.timepoints[0].study_uid))
    assert [row["kind"] for row in _items(conn)] == ["fhir"]


def test_transaction_bundle_is_conditional_on_identifiers():
    case = Case()
    bundle = transaction_bundle(case.prediction(), {"reference": "Patient/x"})
    methods = [(e["request"]["method"], e["request"]["url"].split("?")[0]) for e in bundle["entry"]]
    assert methods == [("PUT", "Device"), ("PUT", "RiskAssessment")]
    assert (
        "identifier=urn%3Aicibenefit%3Aprediction%7Curn%3Aoid%3A"
        in bundle["entry"][1]["request"]["url"]
    )


def test_each_report_is_audited_without_clear_identifiers(setup):
    from icibenefit import audit

    case, settings, _, processor, _, job = setup
    latest = case.timepoints[-1].study_uid
    with audit.configured(settings) as log:
        processor.process(job(latest))
        text = log.path.read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    reported = [e for e in entries if e["event"] == "reported"]
    assert len(reported) == 1
    assert reported[0]["component"] == "reporting"
    assert reported[0]["details"]["sr"]
    assert case.patient_id not in text
    assert latest not in text


def test_earlier_study_cascades_to_later_reported_studies_only(setup):
    case, settings, conn, processor, predictor, job = setup
    baseline, followup1, latest = (tp.study_uid for tp in case.timepoints)
    processor.process(job(latest, job_id=1))
    assert len(predictor.seen) == 1
    # A late instance in the baseline: its run, then the later study that was reported.
    predictor.labs = ("obs-1", "obs-late")
    processor.process(job(baseline, version=2, job_id=2))
    assert len(predictor.seen) == 3
    assert {p.parent.name for p in predictor.seen[1]} == {baseline}
    assert {p.parent.name for p in predictor.seen[2]} == {baseline, followup1, latest}
    items = _items(conn)
    assert [(r["kind"], r["study_uid"]) for r in items] == [
        ("dicom", latest),
        ("fhir", latest),
        ("dicom", baseline),
        ("fhir", baseline),
        ("dicom", latest),
        ("fhir", latest),
    ]
    OutboxSender(conn, settings).deliver_due()
    latest_srs = sorted(
        (
            ds
            for ds in (dcmread(p) for p in (settings.data_dir / "outbox" / "dicom").glob("*.dcm"))
            if ds.StudyInstanceUID == latest
        ),
        key=lambda ds: ds.InstanceNumber,
    )
    assert len(latest_srs) == 2
    named = latest_srs[1].PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert named.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == latest_srs[0].SOPInstanceUID


def test_cascade_with_unchanged_inputs_sends_nothing_new(setup):
    case, _, conn, processor, _, job = setup
    baseline, latest = case.timepoints[0].study_uid, case.timepoints[-1].study_uid
    processor.process(job(latest, job_id=1))
    processor.process(job(baseline, job_id=2))
    before = len(_items(conn))
    processor.process(job(baseline, version=2, job_id=3))
    assert len(_items(conn)) == before


@pytest.mark.parametrize("setup", ["both"], indirect=True)
def test_both_queues_sr_then_pdf_then_fhir_and_archives_both(setup):
    case, settings, conn, processor, _, job = setup
    latest = case.timepoints[-1].study_uid
    processor.process(job(latest))
    items = _items(conn)
    assert [row["kind"] for row in items] == ["dicom", "dicom", "fhir"]
    OutboxSender(conn, settings).deliver_due()
    delivered = [dcmread(p) for p in (settings.data_dir / "outbox" / "dicom").glob("*.dcm")]
    by_modality = {ds.Modality: ds for ds in delivered}
    assert set(by_modality) == {"SR", "DOC"}
    sr, pdf = by_modality["SR"], by_modality["DOC"]
    assert pdf.StudyInstanceUID == sr.StudyInstanceUID == latest
    assert items[1]["dedup_key"] == f"dicom:{pdf.SOPInstanceUID}"
    archived = settings.data_dir / "reports" / "pdf" / pdf.SeriesInstanceUID
    assert (archived / f"{pdf.SOPInstanceUID}.dcm").is_file()
    assert (
        settings.data_dir / "reports" / "sr" / sr.SeriesInstanceUID / f"{sr.SOPInstanceUID}.dcm"
    ).is_file()
    # The SEGs were read with pixel data: one tumour group per timepoint in the SR,
    # and the PDF references one key slice per timepoint.
    tracked = {
        str(item.TextValue)
        for item in _content_items(sr)
        if "TextValue" in item and str(item.TextValue).startswith("Tumour (")
    }
    assert tracked == {f"Tumour ({tp.label})" for tp in case.timepoints}
    assert len(pdf.SourceInstanceSequence) == len(case.timepoints)
    # A retry queues nothing new (deterministic UIDs, same dedup keys).
    processor.process(job(latest))
    assert len(_items(conn)) == 3


@pytest.mark.parametrize("setup", ["pdf"], indirect=True)
def test_pdf_only_queues_no_sr(setup):
    case, settings, conn, processor, _, job = setup
    processor.process(job(case.timepoints[-1].study_uid))
    assert [row["kind"] for row in _items(conn)] == ["dicom", "fhir"]
    OutboxSender(conn, settings).deliver_due()
    [only] = (settings.data_dir / "outbox" / "dicom").glob("*.dcm")
    assert dcmread(only).Modality == "DOC"
    assert not (settings.data_dir / "reports" / "sr").exists()


def test_segmentations_and_only_key_slices_are_read_with_pixel_data(setup):
    case, _, _, processor, _, _ = setup
    paths = {}
    for tp in case.timepoints:
        folder = processor.settings.data_dir.parent / "store" / tp.study_uid
        paths.update({p.stem: p for p in folder.glob("*.dcm")})
    prediction = case.prediction()
    images, segmentations = runner._input_datasets(prediction, paths)
    assert segmentations
    assert all("PixelData" in ds for ds in segmentations)
    assert not any("PixelData" in ds for ds in images)
    with_keys = runner._with_key_slice_pixels(prediction, images, segmentations, paths)
    drawn = [ds for ds in with_keys if "PixelData" in ds]
    assert len(drawn) == len(prediction.imaging)
    assert len(with_keys) == len(images)


def _content_items(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _content_items(item)
