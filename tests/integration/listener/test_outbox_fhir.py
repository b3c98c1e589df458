"""Outbox FHIR writes against the real test FHIR server: auth, retries, dead letters."""

from __future__ import annotations

import time

import httpx
import pytest

from icibenefit.listener.outbox import OutboxSender
from icibenefit.persistence import index
from icibenefit.persistence.outbox import Outbox

pytestmark = pytest.mark.integration


def _risk_assessment(identifier: str) -> dict:
    return {
        "resourceType": "RiskAssessment",
        "status": "final",
        "identifier": [{"system": "urn:icibenefit:test", "value": identifier}],
        "subject": {"display": "pseudonymous"},
    }


def _deliver_until_settled(sender: OutboxSender, conn, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sender.deliver_due()
        pending = conn.execute(
            "SELECT count(*) FROM outbox WHERE state IN ('queued', 'sending')"
        ).fetchone()[0]
        if pending == 0:
            return
        time.sleep(0.05)
    raise AssertionError("outbox did not settle")


def test_fhir_items_are_retried_then_delivered_once_with_bearer_auth(
    fhir_server_factory, make_settings
) -> None:
    server = fhir_server_factory(token="outbox-secret")
    settings = make_settings(retry_base_seconds=0.1, **server.settings_overrides())
    conn = index.connect(settings.data_dir)
    outbox = Outbox(conn, settings)
    for number in range(2):
        outbox.enqueue_fhir(
            "POST",
            "RiskAssessment",
            _risk_assessment(f"ra-{number}"),
            f"fhir:ra-{number}",
            headers={"If-None-Exist": f"identifier=urn:icibenefit:test|ra-{number}"},
        )
    server.inject_faults(503, 3)
    sender = OutboxSender(conn, settings)
    _deliver_until_settled(sender, conn)
    sender.close()
    rows = conn.execute("SELECT state, attempts FROM outbox ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["done", "done"]
    assert sum(r[1] for r in rows) == 2 + 3  # three 503 answers were retried
    posts = [r for r in server.requests() if r["method"] == "POST"]
    assert [r["status"] for r in posts].count(201) == 2
    found = httpx.get(
        server.base_url + "/RiskAssessment",
        params={"identifier": "urn:icibenefit:test|ra-1"},
        headers=server.auth_headers,
    ).json()
    assert len(found.get("entry", [])) == 1


def test_rejected_fhir_item_becomes_dead_letter_at_once(fhir_server_factory, make_settings) -> None:
    server = fhir_server_factory()
    settings = make_settings(retry_base_seconds=0.1, **server.settings_overrides())
    conn = index.connect(settings.data_dir)
    Outbox(conn, settings).enqueue_fhir("POST", "RiskAssessment", {"resourceType": "Nope"}, "bad")
    sender = OutboxSender(conn, settings)
    _deliver_until_settled(sender, conn)
    row = conn.execute("SELECT state, attempts, last_error FROM outbox").fetchone()
    assert (row[0], row[1]) == ("dead", 1)
    assert "PermanentDeliveryError" in row[2]
