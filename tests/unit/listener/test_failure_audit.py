"""Audit entries of failures: refused C-STOREs, associations and connections, dead jobs.

Each test sends data carrying a recognisable fake patient id and name and
checks that neither (nor the Study Instance UID) reaches the audit file.
"""

from __future__ import annotations

import errno
import sys
import time
import types
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pynetdicom import AE
from typer.testing import CliRunner

from icibenefit import audit
from icibenefit.cli import app
from icibenefit.listener.scp import ScpCounters, StorageScp, rejection_reason
from icibenefit.listener.status_api import StatusServer
from icibenefit.listener.store import DicomStore
from icibenefit.persistence import index, instances
from icibenefit.persistence.jobs import JobQueue
from icibenefit.persistence.outbox import Outbox
from icibenefit.privacy import pseudonymize
from tests.integration.listener.dicom_factory import dataset_bytes, write_ct_series
from tests.peers.common import free_port

FAKE_PATIENT_ID = "FAKE-PAT-AUDIT-7731"
FAKE_NAME = "Auditson^Fakey"
KEY = "failure-audit-key"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _entries(settings, event: str | None = None) -> list[dict]:
    found = audit.AuditLog.from_settings(settings).entries()
    return [entry for entry in found if event is None or entry["event"] == event]


def _assert_no_clear_identifiers(settings, *more: str) -> None:
    text = (settings.data_dir / "audit" / "audit.jsonl").read_text()
    for clear in (FAKE_PATIENT_ID, FAKE_NAME, *more):
        assert clear not in text


@pytest.fixture
def ct(tmp_path: Path):
    return write_ct_series(tmp_path / "ct", 2, patient_id=FAKE_PATIENT_ID, patient_name=FAKE_NAME)


def test_rejected_instance_records_ae_status_and_reason_only(make_settings, ct) -> None:
    settings = make_settings(pseudonym_key=KEY)
    store = DicomStore(settings)
    ds = dcmread(ct.files[0], stop_before_pixels=True)
    truncated = dataset_bytes(ct.files[0])[:-100]  # header intact, pixel data cut short
    with audit.configured(settings):
        outcome = store.store(
            truncated, "1.2.840.10008.1.2.1", CT_IMAGE, str(ds.SOPInstanceUID), "MODALITY1"
        )
    assert outcome.disposition == "rejected"
    [entry] = _entries(settings)
    assert entry["event"] == "instance_refused"
    assert (entry["actor"], entry["outcome"]) == ("MODALITY1", "rejected")
    assert entry["details"]["status"] == "0xC000"
    assert "shorter than its declared length" in entry["details"]["reason"]
    assert "patient" not in entry
    assert "study" not in entry
    _assert_no_clear_identifiers(settings, ct.study_uid, str(ds.SOPInstanceUID))


def test_instance_that_cannot_be_written_records_the_cause_without_path(
    make_settings, ct, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(pseudonym_key=KEY)
    store = DicomStore(settings)
    ds = dcmread(ct.files[0], stop_before_pixels=True)

    def disk_full(temp: Path, *args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(temp))

    monkeypatch.setattr(instances, "write_atomically", disk_full)
    with audit.configured(settings):
        outcome = store.store(
            dataset_bytes(ct.files[0]),
            "1.2.840.10008.1.2.1",
            CT_IMAGE,
            str(ds.SOPInstanceUID),
            "MODALITY1",
        )
    assert (outcome.status, outcome.disposition) == (0xA700, "failed")
    [entry] = _entries(settings, "instance_refused")
    assert entry["outcome"] == "failed"
    assert entry["details"] == {"status": "0xA700", "reason": "OSError: No space left on device"}
    assert "patient" not in entry
    _assert_no_clear_identifiers(settings, ct.study_uid, str(ds.SOPInstanceUID), ".part")


def test_rejection_reason_names_the_failed_check(make_settings) -> None:
    settings = make_settings(scp_ae_title="ICIB", allowed_calling_ae_titles=["PACS"])
    assert rejection_reason("PACS", "OTHER", settings) == "called AE title is not ours"
    assert rejection_reason("ROGUE", "ICIB", settings) == "calling AE title not allowed"
    assert rejection_reason("ROGUE", "X", settings) == (
        "called AE title is not ours; calling AE title not allowed"
    )
    assert rejection_reason("PACS", "ICIB", settings).startswith("association limit")


def _wait_for_entries(settings, event: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        path = settings.data_dir / "audit" / "audit.jsonl"
        if path.is_file() and len(found := _entries(settings, event)) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} {event} entries")


def test_rejected_associations_and_refused_connections_are_audited(make_settings) -> None:
    settings = make_settings(
        scp_ae_title="ICIB",
        scp_bind="127.0.0.1",
        scp_port=free_port(),
        allowed_calling_ae_titles=["PACS"],
    )
    scp = StorageScp(settings, DicomStore(settings), ScpCounters())
    with audit.configured(settings):
        scp.start()
        try:
            for calling, called in (("ROGUE", "ICIB"), ("PACS", "NOTUS")):
                scu = AE(ae_title=calling)
                scu.add_requested_context("1.2.840.10008.1.1")
                assoc = scu.associate("127.0.0.1", scp.port, ae_title=called)
                assert assoc.is_rejected
            rejected = _wait_for_entries(settings, "association_rejected", 2)
        finally:
            scp.stop()
    assert [(e["actor"], e["details"]["called_ae"], e["details"]["reason"]) for e in rejected] == [
        ("ROGUE", "ICIB", "calling AE title not allowed"),
        ("PACS", "NOTUS", "called AE title is not ours"),
    ]
    assert {e["details"]["address"] for e in rejected} == {"127.0.0.1"}
    assert scp.counters.snapshot()["rejections"] == 2

    limited = make_settings(
        scp_ae_title="ICIB",
        scp_bind="127.0.0.1",
        scp_port=free_port(),
        allowed_source_addresses=["192.0.2.1"],
        data_dir=settings.data_dir,
    )
    scp = StorageScp(limited, DicomStore(limited), ScpCounters())
    with audit.configured(limited):
        scp.start()
        try:
            scu = AE(ae_title="PACS")
            scu.add_requested_context("1.2.840.10008.1.1")
            assert not scu.associate("127.0.0.1", scp.port, ae_title="ICIB").is_established
            [refused] = _wait_for_entries(limited, "connection_refused", 1)
        finally:
            scp.stop()
    assert (refused["actor"], refused["outcome"]) == ("127.0.0.1", "refused")
    assert refused["details"]["reason"] == "source address not allowed"


def _received_study(settings, ct) -> None:
    store = DicomStore(settings)
    for path in ct.files:
        ds = dcmread(path, stop_before_pixels=True)
        outcome = store.store(
            dataset_bytes(path), "1.2.840.10008.1.2.1", CT_IMAGE, str(ds.SOPInstanceUID), "A"
        )
        assert outcome.status == 0


def test_dead_jobs_are_audited_with_the_pseudonym_only(make_settings, ct) -> None:
    settings = make_settings(pseudonym_key=KEY, job_max_attempts=1)
    _received_study(settings, ct)
    conn = index.connect(settings.data_dir)
    queue = JobQueue(conn, settings)
    later = time.time() + 1e3
    with audit.configured(settings):
        queue.enqueue_stable_studies(later)
        job = queue.claim(1, later)
        assert job is not None
        assert queue.fail(job, f"KeyError: no clinical record for {FAKE_PATIENT_ID}") == "dead"
        conn.execute(  # a job whose worker died on its last allowed attempt
            "INSERT INTO jobs (study_uid, version, state, attempts, next_attempt_at, created_at,"
            " worker_pid) VALUES (?, 2, 'running', 1, 0, 0, 77)",
            (ct.study_uid,),
        )
        assert queue.requeue_running(77) == 1
    dead = _entries(settings, "job_dead")
    assert [e["details"]["job"] for e in dead] == [job.id, job.id + 1]
    pseudonym = pseudonymize(FAKE_PATIENT_ID, KEY)
    assert {e["patient"] for e in dead} == {pseudonym}
    assert dead[0]["details"]["error"] == f"KeyError: no clinical record for {pseudonym}"
    assert dead[1]["details"]["error"] == "process died during every attempt"
    assert {e["outcome"] for e in dead} == {"dead"}
    _assert_no_clear_identifiers(settings, ct.study_uid)


def test_status_api_lists_outbox_items(make_settings, ct) -> None:
    settings = make_settings(status_bind="127.0.0.1", status_port=free_port())
    conn = index.connect(settings.data_dir)
    item = Outbox(conn, settings).enqueue_dicom(dcmread(ct.files[0]), study_uid=ct.study_uid)
    conn.execute("UPDATE outbox SET state = 'dead', last_error = 'gone'")
    server = StatusServer(settings, ScpCounters(), lambda: True)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}/outbox"
        [shown] = httpx.get(base, timeout=10).json()
        assert httpx.get(base + "?state=dead&state=sent", timeout=10).json() == [shown]
        assert httpx.get(base + "?state=queued", timeout=10).json() == []
        assert httpx.get(base + "?state=nope", timeout=10).status_code == 400
    finally:
        server.stop()
    assert (shown["id"], shown["kind"], shown["state"], shown["last_error"]) == (
        item,
        "dicom",
        "dead",
        "gone",
    )
    assert FAKE_PATIENT_ID not in str(shown)


def test_offline_predict_is_audited_with_the_pseudonym(
    make_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``predict``'s audit line, with the model and data sources faked (pipeline has its tests)."""
    from icibenefit.cli import predict as pipeline_cli

    class FakePrediction:
        bundle_name, bundle_version = "demo", "1.0.0"

        def model_dump_json(self, indent: int) -> str:
            return "{}"

    class FakePredictor:
        def predict(self, files: list[str], record: object) -> FakePrediction:
            return FakePrediction()

    inference = types.ModuleType("icibenefit.pipeline.inference")
    inference.open_bundle = lambda bundle, **options: FakePredictor()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "icibenefit.pipeline.inference", inference)
    monkeypatch.setattr(pipeline_cli, "_clinical_record", lambda *args: None)
    monkeypatch.setattr(pipeline_cli, "_patient_files", lambda *args: [])
    settings = make_settings(pseudonym_key=KEY)
    monkeypatch.setenv("ICIBENEFIT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ICIBENEFIT_PSEUDONYM_KEY", KEY)
    arguments = ["--dicom", str(tmp_path), "--clinical", str(tmp_path), "--bundle", str(tmp_path)]
    result = CliRunner().invoke(
        app, ["predict", *arguments, "--patient", FAKE_PATIENT_ID, "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    [entry] = _entries(settings, "predicted")
    assert entry["patient"] == pseudonymize(FAKE_PATIENT_ID, KEY)
    assert (entry["actor"], entry["details"]) == (audit.process_user(), {"model": "demo 1.0.0"})
    _assert_no_clear_identifiers(settings)
