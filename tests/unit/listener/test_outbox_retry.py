"""Dead letters: listing (CLI JSON, no PHI or credentials), re-queueing, refusals, audit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from typer.testing import CliRunner

from icibenefit import audit
from icibenefit.cli import app
from icibenefit.listener.outbox import OutboxSender, destination_of, list_items
from icibenefit.listener.store import DicomStore
from icibenefit.persistence import index
from icibenefit.persistence.outbox import NotRetryableError, Outbox, requeue_dead
from icibenefit.privacy import pseudonymize
from tests.integration.listener.dicom_factory import (
    PATIENT_ID,
    PATIENT_NAME,
    receive,
    write_ct_series,
)
from tests.peers.common import free_port

FHIR_PASSWORD = "s3cret-pw"


@pytest.fixture
def dead_letters(make_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One received study, a dead DICOM and a dead FHIR item for it, and one queued item."""
    pacs_port, fhir_port = free_port(), free_port()  # both closed
    overrides = {
        "pacs_ae_title": "NOBODY",
        "pacs_host": "127.0.0.1",
        "pacs_port": pacs_port,
        "fhir_base_url": f"http://user:{FHIR_PASSWORD}@127.0.0.1:{fhir_port}/fhir",
        "outbox_max_attempts": 1,
        "pseudonym_key": "unit-test-key",
    }
    settings = make_settings(**overrides)
    for name, value in {**overrides, "data_dir": settings.data_dir}.items():
        monkeypatch.setenv(f"ICIBENEFIT_{name.upper()}", str(value))
    ct = write_ct_series(tmp_path / "ct", 2)
    store = DicomStore(settings)
    assert [outcome.status for outcome in receive(store, ct.files)] == [0] * len(ct.files)
    conn = index.connect(settings.data_dir)
    outbox = Outbox(conn, settings)
    first, second = (dcmread(path) for path in ct.files)
    dicom_id = outbox.enqueue_dicom(first, study_uid=ct.study_uid, job_id=1)
    fhir_id = outbox.enqueue_fhir(
        "POST",
        f"Patient?identifier={PATIENT_ID}",
        {"name": PATIENT_NAME},
        "fhir:1",
        study_uid=ct.study_uid,
    )
    sender = OutboxSender(conn, settings)
    with audit.configured(settings):
        assert sender.deliver_due() == 2
    queued_id = outbox.enqueue_dicom(second, study_uid=ct.study_uid)
    conn.execute(
        "UPDATE outbox SET next_attempt_at = ? WHERE id = ?", (time.time() + 1e4, queued_id)
    )
    return settings, conn, sender, ct, {"dicom": dicom_id, "fhir": fhir_id, "queued": queued_id}


def _audit_text(settings) -> str:
    return (settings.data_dir / "audit" / "audit.jsonl").read_text()


def _entries(settings, event: str) -> list[dict]:
    return [e for e in audit.AuditLog.from_settings(settings).entries() if e["event"] == event]


def test_outbox_list_json_shape_without_phi_or_credentials(dead_letters) -> None:
    _settings, _conn, _sender, _ct, ids = dead_letters
    runner = CliRunner()
    result = runner.invoke(app, ["outbox", "list", "--json"])
    assert result.exit_code == 0, result.output
    items = {item["id"]: item for item in json.loads(result.output)}
    assert set(items) == set(ids.values())
    for item in items.values():
        assert {"id", "kind", "state", "attempts", "last_error", "destination"} <= set(item)
    assert items[ids["dicom"]]["kind"] == "dicom"
    assert items[ids["dicom"]]["state"] == "dead"
    assert items[ids["dicom"]]["attempts"] == 1
    assert "association" in items[ids["dicom"]]["last_error"]
    assert items[ids["dicom"]]["destination"].startswith("NOBODY@127.0.0.1:")
    assert items[ids["fhir"]]["kind"] == "fhir"
    assert items[ids["fhir"]]["state"] == "dead"
    assert items[ids["fhir"]]["destination"].endswith("/fhir")
    assert items[ids["queued"]]["state"] == "queued"
    assert items[ids["queued"]]["attempts"] == 0
    for secret in (FHIR_PASSWORD, "user:", PATIENT_ID, PATIENT_NAME):
        assert secret not in result.output
    dead = json.loads(runner.invoke(app, ["outbox", "list", "--json", "--state", "dead"]).output)
    assert sorted(item["id"] for item in dead) == sorted([ids["dicom"], ids["fhir"]])
    both = runner.invoke(app, ["outbox", "list", "--json", "--state", "dead", "--state", "queued"])
    assert len(json.loads(both.output)) == 3
    sent = runner.invoke(app, ["outbox", "list", "--json", "--state", "sent"])
    assert (sent.exit_code, json.loads(sent.output)) == (0, [])
    assert runner.invoke(app, ["outbox", "list", "--state", "bogus"]).exit_code == 2
    table = runner.invoke(app, ["outbox", "list"])
    assert table.exit_code == 0
    assert "dead" in table.output


def test_delivered_fhir_destination_loses_query_and_credentials(make_settings) -> None:
    settings = make_settings(fhir_base_url="https://u:pw@fhir.example/r4")
    shown = destination_of(
        settings, "fhir", f"https://u:pw@fhir.example/r4/Patient?identifier={PATIENT_ID}"
    )
    assert shown == "https://fhir.example/r4/Patient?*"
    assert destination_of(settings, "fhir") == "https://fhir.example/r4"
    conn = index.connect(settings.data_dir)
    Outbox(conn, settings).enqueue_fhir("POST", "RiskAssessment", {}, "fhir:2")
    conn.execute("UPDATE outbox SET last_error = 'ConnectError: https://u:pw@fhir.example/r4'")
    [item] = list_items(conn, settings)
    assert item["last_error"] == "ConnectError: https://fhir.example/r4"


def test_retry_refuses_items_that_are_not_dead_and_changes_nothing(dead_letters) -> None:
    settings, conn, _sender, _ct, ids = dead_letters
    runner = CliRunner()
    result = runner.invoke(app, ["outbox", "retry", str(ids["dicom"]), str(ids["queued"])])
    assert result.exit_code == 1
    assert f"item {ids['queued']} is queued, not dead" in result.output
    assert "nothing re-queued" in result.output
    result = runner.invoke(app, ["outbox", "retry", "999"])
    assert result.exit_code == 1
    assert "item 999 does not exist" in result.output
    states = dict(conn.execute("SELECT id, state FROM outbox"))
    assert states == {ids["dicom"]: "dead", ids["fhir"]: "dead", ids["queued"]: "queued"}
    assert runner.invoke(app, ["outbox", "retry"]).exit_code == 2
    refused = _entries(settings, "outbox_retried")
    assert [e["outcome"] for e in refused] == ["refused", "refused"]
    assert refused[0]["details"]["refused"] == {str(ids["queued"]): "is queued, not dead"}
    assert refused[0]["actor"] == audit.process_user()


def test_retry_all_dead_requeues_due_now_and_sender_takes_them(dead_letters) -> None:
    settings, conn, sender, ct, ids = dead_letters
    before = time.time()
    result = CliRunner().invoke(app, ["outbox", "retry", "--all-dead"])
    assert result.exit_code == 0, result.output
    assert "re-queued 2 item(s)" in result.output
    rows = {
        row["id"]: row
        for row in conn.execute("SELECT id, state, attempts, next_attempt_at FROM outbox")
    }
    for kind in ("dicom", "fhir"):
        row = rows[ids[kind]]
        assert (row["state"], row["attempts"]) == ("queued", 0)
        assert before <= row["next_attempt_at"] <= time.time()
    claimed = [sender.claim(), sender.claim()]
    assert sorted(item.id for item in claimed if item) == sorted([ids["dicom"], ids["fhir"]])
    assert sender.claim() is None  # the queued item is not due yet
    requeued = _entries(settings, "outbox_retried")
    assert sorted(e["details"]["item"] for e in requeued) == sorted([ids["dicom"], ids["fhir"]])
    assert {e["outcome"] for e in requeued} == {"requeued"}
    assert {e["actor"] for e in requeued} == {audit.process_user()}
    assert {e["patient"] for e in requeued} == {pseudonymize(PATIENT_ID, "unit-test-key")}
    nothing = CliRunner().invoke(app, ["outbox", "retry", "--all-dead"])
    assert (nothing.exit_code, nothing.output.strip()) == (0, "re-queued 0 item(s)")
    assert ct.study_uid not in _audit_text(settings)


def test_dead_letters_are_audited_without_identifiers(dead_letters) -> None:
    settings, _conn, _sender, ct, ids = dead_letters
    dead = {e["details"]["item"]: e for e in _entries(settings, "dead_letter")}
    assert set(dead) == {ids["dicom"], ids["fhir"]}
    assert dead[ids["dicom"]]["details"]["kind"] == "dicom"
    assert "association" in dead[ids["dicom"]]["details"]["error"]
    assert dead[ids["fhir"]]["details"]["destination"].endswith("/fhir")
    for entry in dead.values():
        assert entry["outcome"] == "dead"
        assert entry["patient"].startswith("p-")
        assert entry["study"].startswith("s-")
    text = _audit_text(settings)
    for clear in (PATIENT_ID, PATIENT_NAME, ct.study_uid, FHIR_PASSWORD):
        assert clear not in text


def test_requeue_dead_is_all_or_nothing(dead_letters) -> None:
    settings, conn, _sender, _ct, ids = dead_letters
    with pytest.raises(NotRetryableError, match="is queued"):
        requeue_dead(conn, [ids["fhir"], ids["queued"]], actor="t", component="test")
    assert [i["state"] for i in list_items(conn, settings, ["dead"])] == ["dead", "dead"]
    assert requeue_dead(conn, [], actor="t", component="test") == []
    assert requeue_dead(conn, [ids["fhir"], ids["fhir"]], actor="t", component="test") == [
        ids["fhir"]
    ]
    with pytest.raises(NotRetryableError, match="is queued, not dead"):
        requeue_dead(conn, [ids["fhir"]], actor="t", component="test")
