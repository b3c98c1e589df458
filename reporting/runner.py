"""One job, end to end: inputs from the index, a prediction, two reports in the outbox.

:class:`ReportingProcessor` is what the listener's workers run for a stable
study (the seam, ``StudyProcessor``, is documented in :mod:`icibenefit.listener.jobs`;
the job it receives is a :class:`~icibenefit.persistence.jobs.JobContext`).  It

1. collects the patient's studies *up to and including* the job's study (by
   study date), so the report of a baseline study says what was known at
   baseline even when follow-ups arrived meanwhile, and every run is
   reproducible from the index alone;
2. asks the clinical source for the patient's record (FHIR server or NDJSON);
3. asks the pipeline for a :class:`~icibenefit.domain.Prediction`;
4. builds the DICOM reports the ``dicom_reports`` setting asks for (SR,
   PDF or both): the SR (:mod:`icibenefit.reporting.sr`) and the Encapsulated
   PDF report (:mod:`icibenefit.reporting.pdf_report`), keeps a copy of each in
   the report archive (:mod:`icibenefit.persistence.archive`: the SR
   predecessor of the next rerun is found there) and queues them for the PACS;
5. queues one FHIR transaction: conditional update of the Device and of the
   RiskAssessment on their business identifiers (a copy is kept in the FHIR
   archive, one folder per study).

Inputs are read sparingly: the CT headers without pixel data, the SEGs with
theirs (the SR's per-timepoint tumour groups and the PDF's contours come from
the masks), and with pixel data only the one key slice per timepoint the PDF
draws (:func:`~icibenefit.reporting.pdf_report.key_image_uids`), never whole series.

Idempotence: the SR's and the PDF's UIDs derive from (study, model version, input set), the
RiskAssessment's business identifier from (processed study, model version),
and the outbox ignores a dedup key it already holds, so a retried attempt
queues nothing new.  A rerun after late instances has a new input set: a new
SR naming its predecessor, and a new transaction that *updates* the one
RiskAssessment of the study.  Later studies of the patient that were reported
already are re-reported in the same job (see :meth:`ReportingProcessor.process`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from pydicom import Dataset, dcmread

from icibenefit import audit
from icibenefit.domain import ClinicalRecord, Prediction
from icibenefit.persistence.archive import FhirArchive, PdfArchive, RunLog, SrArchive
from icibenefit.persistence.jobs import JobContext, StudyRecord
from icibenefit.privacy import pseudonymize
from icibenefit.reporting import identity
from icibenefit.reporting.pdf_report import build_pdf_report, key_image_uids
from icibenefit.reporting.risk_assessment import (
    build_device,
    build_risk_assessment,
    device_identifier,
    patient_reference,
    to_json,
)
from icibenefit.reporting.sr import build_sr
from icibenefit.settings import Settings

log = logging.getLogger(__name__)


class PatientPredictor(Protocol):
    """The pipeline seam: a patient's record and DICOM files in, a prediction out."""

    def __call__(self, record: ClinicalRecord, dicom_files: Sequence[Path]) -> Prediction:
        """Predict from exactly these inputs; raise an IciBenefitError when impossible."""
        ...


class RecordSource(Protocol):
    """Where the clinical record comes from (``icibenefit.fhir.sources.ClinicalSource``)."""

    def clinical_record(self, patient_id: str, issuer: str | None = None) -> ClinicalRecord:
        """The clinical record of the patient with this DICOM PatientID."""
        ...


class InstanceLike(Protocol):
    """What the processor reads from an index row (``persistence.jobs.InstanceRecord``)."""

    @property
    def sop_instance_uid(self) -> str:
        """SOP Instance UID."""
        ...

    @property
    def path(self) -> Path:
        """Where the instance is stored."""
        ...


@dataclass(frozen=True)
class Reports:
    """What one run produced (returned for the demo and tests)."""

    prediction: Prediction
    sr: Dataset | None
    sr_path: Path | None
    predecessor_uid: str | None
    transaction: dict[str, Any]
    transaction_path: Path
    pdf: Dataset | None = None
    pdf_path: Path | None = None


class ReportingProcessor:
    """The listener's ``StudyProcessor`` (:mod:`icibenefit.listener.jobs`) for icibenefit.

    Parameters
    ----------
    settings
        The service settings (data directory, pseudonym key, FHIR identifier system).
    records
        The clinical source.
    predictor
        The pipeline (see :class:`PatientPredictor`).
    """

    def __init__(
        self, settings: Settings, records: RecordSource, predictor: PatientPredictor
    ) -> None:
        self.settings = settings
        self.records = records
        self.predictor = predictor
        self.archive = SrArchive.of(settings.data_dir)
        self.pdf_archive = PdfArchive.of(settings.data_dir)
        self.transactions = FhirArchive.of(settings.data_dir)
        self.runs = RunLog.of(settings.data_dir)

    def process(self, job: JobContext) -> None:
        """Run one job.

        The job's study is reported, then every *later* study of the patient
        that was reported before: their inputs include this study's images, so
        a late instance here (or a study that arrived after its successors)
        would otherwise leave their reports stale.  Unchanged inputs give the
        same UIDs and dedup keys, so the cascade only sends what changed.
        """
        study = job.index.study(job.study_uid)
        patient_studies = job.index.patient_studies(job.study_uid)
        later = [
            s
            for s in patient_studies
            if study.study_date
            and s.study_date > study.study_date
            and self.runs.reported(s.study_uid)
        ]
        record: ClinicalRecord | None = None
        for target in [study, *later]:
            record = self._run(job, target, patient_studies, record)

    def _run(
        self,
        job: JobContext,
        target: StudyRecord,
        patient_studies: Sequence[StudyRecord],
        record: ClinicalRecord | None,
    ) -> ClinicalRecord:
        """Predict and report as of ``target``'s date; return the clinical record for reuse."""
        pseudonym = pseudonymize(target.patient_id, self.settings.pseudonym_key.get_secret_value())
        studies = [
            s
            for s in patient_studies
            if not target.study_date or not s.study_date or s.study_date <= target.study_date
        ]
        instances = [i for s in studies for i in job.index.instances(s.study_uid)]
        log.info(
            "job %s: patient %s, %s study, %d studies, %d instances",
            job.job_id,
            pseudonym,
            "its" if target.study_uid == job.study_uid else "a later",
            len(studies),
            len(instances),
        )
        if record is None:
            record = self.records.clinical_record(target.patient_id, _issuer(instances))
        prediction = self.predictor(record, [i.path for i in instances])
        reports = self.report(prediction, record, instances, target.study_uid)
        for dicom_report in (reports.sr, reports.pdf):
            if dicom_report is not None:
                job.outbox.enqueue_dicom(
                    dicom_report, study_uid=target.study_uid, job_id=job.job_id
                )
        key = identity.sr_instance_uid(prediction, target.study_uid)
        job.outbox.enqueue_fhir(
            "POST",
            "",
            reports.transaction,
            f"fhir:riskassessment:{key}",
            study_uid=target.study_uid,
            job_id=job.job_id,
        )
        self.runs.record(target.study_uid, key)
        audit.record(
            "reported",
            component="reporting",
            patient_id=target.patient_id,
            study_uid=target.study_uid,
            details={
                "job": job.job_id,
                "version": job.version,
                "model": f"{prediction.bundle_name} {prediction.bundle_version}",
                "ensemble": prediction.ensemble_kind,
                "sr": str(reports.sr.SOPInstanceUID) if reports.sr is not None else None,
                "pdf": str(reports.pdf.SOPInstanceUID) if reports.pdf is not None else None,
                "predecessor": reports.predecessor_uid,
                "risk_assessment": identity.risk_assessment_identifier(
                    prediction, target.study_uid
                ),
            },
        )
        log.info(
            "job %s: patient %s reported (%s ensemble; SR %s; PDF %s; predecessor %s)",
            job.job_id,
            pseudonym,
            prediction.ensemble_kind,
            _queued(reports.sr, prediction, self.settings.sr_reports),
            _queued(reports.pdf, prediction, self.settings.pdf_reports),
            reports.predecessor_uid or "none",
        )
        return record

    def report(
        self,
        prediction: Prediction,
        record: ClinicalRecord,
        instances: Sequence[InstanceLike],
        study_uid: str,
    ) -> Reports:
        """Build (and archive) the DICOM reports and the FHIR transaction of one prediction.

        Which DICOM reports (SR, PDF or both) follows the ``dicom_reports``
        setting; a prediction without imaging has neither (no CT study to put
        them in), only the FHIR transaction.
        """
        settings = self.settings
        sr = sr_path = predecessor_uid = pdf = pdf_path = None
        if prediction.imaging and (settings.sr_reports or settings.pdf_reports):
            paths = {i.sop_instance_uid: i.path for i in instances}
            images, segmentations = _input_datasets(prediction, paths)
            if settings.pdf_reports:
                images = _with_key_slice_pixels(prediction, images, segmentations, paths)
            if settings.sr_reports:
                series_uid = identity.sr_series_uid(prediction)
                own_uid = identity.sr_instance_uid(prediction)
                predecessor = self.archive.latest(series_uid, exclude=own_uid)
                sr = build_sr(prediction, images, segmentations, predecessor=predecessor)
                sr_path = self.archive.save(sr)
                predecessor_uid = None if predecessor is None else str(predecessor.SOPInstanceUID)
            if settings.pdf_reports:
                pdf = build_pdf_report(prediction, images, segmentations, record=record)
                pdf_path = self.pdf_archive.save(pdf)
        subject = patient_reference(
            prediction.patient_id,
            record.fhir_patient_id,
            self.settings.fhir_patient_identifier_system,
        )
        transaction = transaction_bundle(prediction, subject, study_uid)
        transaction_path = self.transactions.save(
            identity.report_study_uid(prediction, study_uid),
            identity.sr_instance_uid(prediction, study_uid),
            transaction,
        )
        return Reports(
            prediction=prediction,
            sr=sr,
            sr_path=sr_path,
            predecessor_uid=predecessor_uid,
            transaction=transaction,
            transaction_path=transaction_path,
            pdf=pdf,
            pdf_path=pdf_path,
        )


def transaction_bundle(
    prediction: Prediction, subject: dict[str, Any], study_uid: str | None = None
) -> dict[str, Any]:
    """One FHIR transaction: conditional updates of the Device and the RiskAssessment.

    Conditional update (``PUT Type?identifier=system|value``) creates the
    resource when no match exists and replaces it when one does, so retries and
    reruns never duplicate either.  The RiskAssessment's performer points at
    the Device's ``urn:uuid`` full URL, which the server rewrites to the
    Device's real id within the same transaction (FHIR R4 3.1.0.11.2).
    """
    device_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, identity.device_uid(prediction))}"
    ra_key = identity.risk_assessment_identifier(prediction, study_uid)
    ra_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, ra_key)}"
    device = to_json(build_device(prediction))
    risk = to_json(
        build_risk_assessment(
            prediction,
            subject=subject,
            device_reference={"reference": device_url},
            study_uid=study_uid,
        )
    )
    device_id = device_identifier(prediction)
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": device_url,
                "resource": device,
                "request": {
                    "method": "PUT",
                    "url": "Device?"
                    + urlencode({"identifier": f"{device_id['system']}|{device_id['value']}"}),
                },
            },
            {
                "fullUrl": ra_url,
                "resource": risk,
                "request": {
                    "method": "PUT",
                    "url": "RiskAssessment?"
                    + urlencode({"identifier": f"{identity.IDENTIFIER_SYSTEM}|{ra_key}"}),
                },
            },
        ],
    }


def _issuer(instances: Sequence[InstanceLike]) -> str | None:
    """IssuerOfPatientID of the patient's images, when the modality sent one."""
    for instance in instances[:1]:
        value = dcmread(instance.path, stop_before_pixels=True).get("IssuerOfPatientID")
        return str(value) if value else None
    return None


def _queued(report: Dataset | None, prediction: Prediction, wanted: bool) -> str:
    """What happened to one kind of DICOM report, for the log."""
    if report is not None:
        return "queued"
    return "not applicable (no CT used)" if wanted and not prediction.imaging else "not configured"


def _input_datasets(
    prediction: Prediction, paths: Mapping[str, Path]
) -> tuple[list[Dataset], list[Dataset]]:
    """The CT images (headers only) and the segmentations (with pixel data) the prediction names.

    SEG pixel data is what locates the tumour on each CT (key slice, outline,
    volume) for both reports; CT pixel data is read later, only for the slices
    the PDF draws (:func:`_with_key_slice_pixels`).
    """
    wanted_images = {uid for tp in prediction.imaging for uid in tp.image_sop_uids}
    series = {tp.series_uid for tp in prediction.imaging if not tp.image_sop_uids}
    wanted_segs = {tp.segmentation_sop_uid for tp in prediction.imaging if tp.segmentation_sop_uid}
    images: list[Dataset] = []
    segmentations: list[Dataset] = []
    for uid, path in paths.items():
        if uid in wanted_segs:
            segmentations.append(dcmread(path))
        elif uid in wanted_images:
            images.append(_header(path))
        elif series:
            ds = _header(path)
            if str(ds.SeriesInstanceUID) in series and ds.get("Modality") == "CT":
                images.append(ds)
    return images, segmentations


def _with_key_slice_pixels(
    prediction: Prediction,
    images: Sequence[Dataset],
    segmentations: Sequence[Dataset],
    paths: Mapping[str, Path],
) -> list[Dataset]:
    """``images`` with the PDF's key slices (one per timepoint) read again with pixel data."""
    keys = set(key_image_uids(prediction, images, segmentations))
    return [dcmread(paths[uid]) if (uid := str(ds.SOPInstanceUID)) in keys else ds for ds in images]


def _header(path: Path) -> Dataset:
    return dcmread(path, stop_before_pixels=True)
