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
from icibenefit.model_store import store as store_module
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


def test_promotion_and_rollback_are_audited(
    audit_log: AuditLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        store_module, "verify_bundle", lambda path: None
    )  # checksums tested elsewhere
    models = ModelStore(tmp_path / "models")
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
