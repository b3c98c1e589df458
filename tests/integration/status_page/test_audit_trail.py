"""Issue 10 acceptance: every step of an end-to-end run is audited, with no clear identifier.

A study goes through the real service (``page_service.py``): storescu ->
store -> stable -> FHIR record -> reports -> outbox delivery.  The audit log
must then hold, for that study, one ``received`` entry per instance, one
``study_stable``, ``fetched``, ``reported`` and ``sent`` entry, and the
service's ``settings_loaded`` entry; and neither the PatientID, any part of the
PatientName nor the Study Instance UID may appear anywhere in the audit files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from icibenefit.audit import study_reference
from icibenefit.privacy import pseudonymize
from tests.integration.listener.dicom_factory import write_ct_series
from tests.integration.listener.server import ListenerProcess
from tests.integration.status_page.page_service import (
    KEY,
    PATIENT_ID,
    PATIENT_NAME,
    job_of,
    outbox_empty,
    send,
)

pytestmark = pytest.mark.integration


def _entries(audit_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    text = "".join(path.read_text() for path in sorted(audit_dir.glob("*.jsonl")))
    return text, [json.loads(line) for line in text.splitlines()]


def test_each_step_of_a_run_is_audited_without_identifiers(
    service: ListenerProcess, tmp_path: Path
) -> None:
    ct = write_ct_series(
        tmp_path / "ct", 4, patient_id=PATIENT_ID, patient_name=PATIENT_NAME, seed=7
    )
    send(service, ct)
    job = service.wait_for(lambda: job_of(service, ct.study_uid, "done"), timeout=120)
    service.wait_for(lambda: outbox_empty(service), timeout=60)

    text, entries = _entries(service.data_dir / "audit")
    family, given = PATIENT_NAME.split("^")
    for clear in (PATIENT_ID, PATIENT_NAME, family, given, ct.study_uid, ct.series_uid):
        assert clear not in text, f"clear-text identifier {clear!r} in the audit log"
    for entry in entries:
        assert entry["ts"].endswith("Z")
        assert {"ts", "event", "component", "actor", "outcome"} <= set(entry)

    patient = pseudonymize(PATIENT_ID, KEY)
    study = study_reference(ct.study_uid, KEY)
    mine = [e for e in entries if e.get("study") == study]
    received = [e for e in mine if e["event"] == "received"]
    assert len(received) == len(ct.files)
    assert {(e["patient"], e["actor"], e["outcome"]) for e in received} == {
        (patient, "TESTSCU", "stored")
    }
    steps = [e["event"] for e in mine if e["event"] != "received"]
    assert steps == ["study_stable", "reported", "sent"], "one entry per step, in order"
    stable, reported, sent = (e for e in mine if e["event"] != "received")
    assert stable["details"]["job"] == job["id"]
    assert reported["patient"] == patient
    assert reported["details"]["job"] == job["id"]
    assert sent["outcome"] == "delivered"
    assert sent["details"]["kind"] == "fhir"

    fetched = [
        e
        for e in entries
        if e["event"] == "fetched" and received[0]["ts"] <= e["ts"] <= reported["ts"]
    ]
    assert fetched, "the clinical record read for the job is audited"
    assert {e["patient"] for e in fetched} == {patient}

    (settings_entry,) = [e for e in entries if e["event"] == "settings_loaded"]
    values = settings_entry["details"]["values"]
    assert values["pseudonym_key"] == "<set>"
    assert KEY not in text
    assert values["job_processor"] == "page_processor:build"
    assert len(settings_entry["details"]["sha256"]) == 64
