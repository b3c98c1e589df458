"""The audited actions outside the listener write their entries (FHIR fetch, model changes)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from icibenefit import audit
from icibenefit.audit import AuditLog
from icibenefit.fhir.readers import NdjsonReader
from icibenefit.fhir.sources import ReaderClinicalSource
from icibenefit.model_store.store import ModelStore
from icibenefit.privacy import pseudonymize

PATIENT_ID = "CALLSITE-PAT-0007"


@pytest.fixture
def audit_log(make_settings) -> Iterator[AuditLog]:
    previous = audit.current()
    log = audit.configure(make_settings(pseudonym_key="callsite-key"))
    yield log
    audit._process_log = previous


def test_fetching_a_clinical_record_is_audited_without_the_identifier(
    audit_log: AuditLog, tmp_path: Path
) -> None:
    folder = tmp_path / "fhir"
    folder.mkdir()
    patient = {
        "resourceType": "Patient",
        "id": "pat-1",
        "identifier": [{"system": "urn:site", "value": PATIENT_ID}],
        "gender": "female",
        "birthDate": "1960-01-01",
    }
    (folder / "Patient.ndjson").write_text(json.dumps(patient) + "\n")
    source = ReaderClinicalSource(
        NdjsonReader(folder),
        pseudonym_key="callsite-key",
        treatment_starts={PATIENT_ID: dt.date(2024, 1, 15)},
    )
    record = source.clinical_record(PATIENT_ID)
    assert record.treatment_start == dt.date(2024, 1, 15)
    assert PATIENT_ID not in audit_log.path.read_text()
    (entry,) = list(audit_log.entries())
    assert entry["event"] == "fetched"
    assert entry["component"] == "fhir"
    assert entry["patient"] == pseudonymize(PATIENT_ID, "callsite-key")
    assert entry["details"]["source"] == "NdjsonReader"


def test_promotion_and_rollback_are_audited(audit_log: AuditLog, tmp_path: Path) -> None:
    models = ModelStore(tmp_path / "models", verify=lambda path: None)  # checksums tested elsewhere
    for bundle_id in ("demo-1", "demo-2"):
        (models.bundles_dir / bundle_id).mkdir(parents=True)
    models.promote("demo-1")
    models.promote("demo-2")
    assert models.rollback() == "demo-1"
    entries = [
        (e["event"], e["details"]["bundle"], e["details"]["previous"]) for e in audit_log.entries()
    ]
    assert entries == [
        ("model_promoted", "demo-1", None),
        ("model_promoted", "demo-2", "demo-1"),
        ("model_rolled_back", "demo-1", "demo-2"),
    ]
    assert all(e["actor"] == audit.process_user() for e in audit_log.entries())


def test_listener_steps_are_audited(make_settings, tmp_path: Path, monkeypatch) -> None:
    """Store -> stable -> outbox delivery -> CLI retry, each with its entry."""
    import time

    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian
    from typer.testing import CliRunner

    from icibenefit.cli import app
    from icibenefit.listener.outbox import OutboxSender
    from icibenefit.listener.store import DicomStore
    from icibenefit.persistence import index
    from icibenefit.persistence.jobs import JobQueue
    from icibenefit.persistence.outbox import Outbox
    from tests.integration.listener.dicom_factory import write_ct_series

    settings = make_settings(pseudonym_key="callsite-key", job_max_attempts=1)
    previous = audit.current()
    log = audit.configure(settings)
    try:
        ct = write_ct_series(tmp_path / "ct", 2, patient_id=PATIENT_ID)
        store = DicomStore(settings)
        for path in ct.files:
            data = path.read_bytes()
            meta_length = int.from_bytes(data[140:144], "little")
            ds = dcmread(path, stop_before_pixels=True)
            outcome = store.store(
                data[144 + meta_length :],
                ExplicitVRLittleEndian,
                str(ds.SOPClassUID),
                str(ds.SOPInstanceUID),
                "MODALITY1",
            )
            assert outcome.disposition == "stored"
        conn = index.connect(settings.data_dir)
        queue = JobQueue(conn, settings)
        (job_id,) = queue.enqueue_stable_studies(time.time() + 1e3)
        Outbox(conn, settings).enqueue_dicom(dcmread(ct.files[0]), study_uid=ct.study_uid)
        assert OutboxSender(conn, settings).deliver_due() == 1
        job = queue.claim(1, time.time() + 1e3)
        assert job is not None
        queue.fail(job, "boom")
        monkeypatch.setenv("ICIBENEFIT_DATA_DIR", str(settings.data_dir))
        monkeypatch.setenv("ICIBENEFIT_PSEUDONYM_KEY", "callsite-key")
        assert CliRunner().invoke(app, ["jobs", "retry", str(job_id)]).exit_code == 0
        conn.close()
    finally:
        audit._process_log = previous

    assert PATIENT_ID not in log.path.read_text()
    assert ct.study_uid not in log.path.read_text()
    entries = list(log.entries())
    study = audit.study_reference(ct.study_uid, "callsite-key")
    patient = pseudonymize(PATIENT_ID, "callsite-key")
    assert [(e["event"], e["outcome"]) for e in entries] == [
        ("received", "stored"),
        ("received", "stored"),
        ("study_stable", "queued"),
        ("sent", "delivered"),
        ("job_dead", "dead"),
        ("job_retried", "requeued"),
    ]
    assert [e.get("study") for e in entries[:5]] == [study] * 5
    assert [e.get("patient") for e in entries[:3]] == [patient] * 3
    assert entries[0]["actor"] == "MODALITY1"
    assert entries[2]["details"]["job"] == job_id
    assert (entries[4]["patient"], entries[4]["details"]["error"]) == (patient, "boom")
    assert entries[5]["details"] == {"jobs": [job_id], "requeued": 1}
    assert entries[5]["actor"] == audit.process_user()
