"""The status page: what it shows, what it hides, and who may press its retry button."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from icibenefit import audit
from icibenefit.audit import study_reference
from icibenefit.listener.status_html import PeerHealth, StatusData, mask_uid, render
from icibenefit.listener.status_page import (
    PeerChecker,
    StatusPage,
    collect,
    is_loopback_host,
)
from icibenefit.persistence import index
from icibenefit.privacy import pseudonymize

PATIENT_ID = "PAGE-PAT-7781"
STUDY = "1.2.826.0.1.3680043.8.498.555001"
KEY = "page-test-key"


def _populate(conn, now: float) -> dict[str, int]:
    """One study with a done job, one with a dead job, an outbox with a dead letter."""
    for number, uid in enumerate((STUDY, STUDY + "2")):
        conn.execute(
            "INSERT INTO studies (study_uid, patient_id, patient_id_hash, study_date,"
            " first_received_at, last_received_at, instances, bytes, pending, version)"
            " VALUES (?, ?, ?, '20240301', ?, ?, 3, 3000, 0, 1)",
            (uid, PATIENT_ID, pseudonymize(PATIENT_ID, KEY), now - 100 + number, now - 90 + number),
        )
    done = conn.execute(
        "INSERT INTO jobs (study_uid, version, state, attempts, next_attempt_at, created_at,"
        " finished_at) VALUES (?, 1, 'done', 1, ?, ?, ?)",
        (STUDY, now - 80, now - 80, now - 70),
    ).lastrowid
    dead = conn.execute(
        "INSERT INTO jobs (study_uid, version, state, attempts, next_attempt_at, created_at,"
        " finished_at, last_error) VALUES (?, 1, 'dead', 5, ?, ?, ?, ?)",
        (STUDY + "2", now - 60, now - 60, now - 50, "ValueError: <script>alert(1)</script>"),
    ).lastrowid
    conn.execute(
        "INSERT INTO outbox (kind, dedup_key, payload_path, study_uid, state, attempts,"
        " next_attempt_at, created_at, last_error) VALUES ('fhir', 'k1', '/x', ?, 'dead', 10,"
        " ?, ?, 'DeliveryError: FHIR server answered 503')",
        (STUDY, now, now - 40),
    )
    conn.execute(
        "INSERT INTO outbox (kind, dedup_key, payload_path, study_uid, state, attempts,"
        " next_attempt_at, created_at, delivered_at, destination) VALUES ('dicom', 'k2', '/y',"
        " ?, 'done', 1, ?, ?, ?, 'ORTHANC@127.0.0.1:4242')",
        (STUDY, now, now - 30, now - 20),
    )
    return {"done": int(done or 0), "dead": int(dead or 0)}


def _archive_prediction(data_dir: Path) -> None:
    """A RiskAssessment transaction as reporting archives it (shape of reporting.runner)."""
    folder = data_dir / "reports" / "fhir" / STUDY
    folder.mkdir(parents=True)
    risk = {
        "resourceType": "RiskAssessment",
        "subject": {"identifier": {"value": PATIENT_ID}},
        "occurrenceDateTime": "2026-11-22T07:00:00+00:00",
        "method": {"coding": [{"code": "icibenefit-demo", "version": "demo-1"}]},
        "prediction": [
            {
                "outcome": {"coding": [{"code": "pfs6"}]},
                "probabilityDecimal": 0.8123,
                "qualitativeRisk": {"coding": [{"code": "high"}]},
            },
            {
                "outcome": {"coding": [{"code": "pfs9"}]},
                "probabilityDecimal": 0.31,
                "qualitativeRisk": {"coding": [{"code": "low"}]},
            },
        ],
    }
    bundle = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Device"}}]}
    bundle["entry"].append({"resource": risk})
    (folder / "1.2.3.json").write_text(json.dumps(bundle))


@pytest.fixture
def settings(make_settings):
    return make_settings(pseudonym_key=KEY)


@pytest.fixture
def populated(settings) -> Iterator[tuple[Any, dict[str, int]]]:
    conn = index.connect(settings.data_dir)
    jobs = _populate(conn, time.time())
    _archive_prediction(settings.data_dir)
    yield conn, jobs
    conn.close()


def test_page_shows_studies_jobs_outbox_predictions_without_identifiers(
    settings, populated
) -> None:
    conn, jobs = populated
    page = render(collect(conn, settings), csrf_token="tok")
    assert PATIENT_ID not in page
    assert STUDY not in page, "full Study Instance UIDs are masked"
    assert pseudonymize(PATIENT_ID, KEY) in page
    assert study_reference(STUDY, KEY) in page
    assert mask_uid(STUDY) in page
    assert f'data-job-id="{jobs["done"]}" data-state="done"' in page
    assert f'data-job-id="{jobs["dead"]}" data-state="dead"' in page
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "dead letters 1" in page
    assert "FHIR server answered 503" in page
    assert "pfs6 0.81 (low)" in page, "likelihood high of benefit = low risk"
    assert "pfs9 0.31 (high)" in page
    assert "icibenefit-demo demo-1" in page


def test_only_failed_or_dead_jobs_and_dead_letters_get_a_form_with_the_token(
    settings, populated
) -> None:
    conn, jobs = populated
    page = render(collect(conn, settings), csrf_token='t"<k')
    assert f'action="/jobs/{jobs["dead"]}/retry"' in page
    assert f'action="/jobs/{jobs["done"]}/retry"' not in page
    dead_letter, delivered = (
        row[0] for row in conn.execute("SELECT id FROM outbox ORDER BY id").fetchall()
    )
    assert f'action="/outbox/{dead_letter}/retry"' in page
    assert f'action="/outbox/{delivered}/retry"' not in page
    assert page.count("<form method=post") == 2
    assert 'value="t&quot;&lt;k"' in page, "the token is escaped like everything else"


def test_render_is_pure_and_escapes_peer_details() -> None:
    peer = PeerHealth(
        name="PACS",
        target="<b>evil</b>",
        configured=True,
        reachable=False,
        detail="C-ECHO status 1",
        checked_at=0.0,
        last_error="x & y",
    )
    data = StatusData(
        generated_at=0.0,
        healthy=False,
        studies=[],
        jobs=[],
        job_counts={},
        outbox_counts={},
        dead_letters=[],
        predictions=[],
        peers=[peer],
    )
    page = render(data, csrf_token="t", flash="Job <1> re-queued.")
    assert page == render(data, csrf_token="t", flash="Job <1> re-queued.")
    assert "&lt;b&gt;evil&lt;/b&gt;" in page
    assert "UNREACHABLE" in page
    assert "x &amp; y" in page
    assert "Job &lt;1&gt; re-queued." in page
    assert "stopping" in page
    assert "1970-01-01 00:00:00Z" in page


def test_peer_checks_are_cached_and_failures_reported(make_settings) -> None:
    settings = make_settings(
        pacs_ae_title="PACS", pacs_host="127.0.0.1", pacs_port=9, fhir_base_url="http://x"
    )
    clock = [1000.0]
    checker = PeerChecker(settings, clock=lambda: clock[0])
    calls: list[str] = []

    def echo() -> tuple[bool, str]:
        calls.append("echo")
        raise ConnectionRefusedError("refused")

    checker._echo_pacs = echo  # type: ignore[method-assign]
    first = checker.pacs()
    assert first is not None
    assert first[0] is False
    assert "refused" in first[1]
    clock[0] += 10
    assert checker.pacs() == first
    assert calls == ["echo"]
    clock[0] += 30
    checker.pacs()
    assert calls == ["echo", "echo"]
    assert PeerChecker(make_settings()).pacs() is None
    assert PeerChecker(make_settings()).fhir() is None


def test_real_echo_to_a_closed_port_is_unreachable(make_settings) -> None:
    from tests.peers.common import free_port

    settings = make_settings(pacs_ae_title="PACS", pacs_host="127.0.0.1", pacs_port=free_port())
    result = PeerChecker(settings).pacs()
    assert result is not None
    assert result[0] is False


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1:8484", True),
        ("localhost:8484", True),
        ("[::1]:8484", True),
        ("127.8.8.8", True),
        ("evil.example:8484", False),
        ("10.0.0.1:8484", False),
        ("", False),
    ],
)
def test_loopback_host_header(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected


@pytest.fixture
def page_server(settings, populated) -> Iterator[tuple[str, dict[str, int], StatusPage]]:
    """A bare HTTP server routing to :class:`StatusPage` (the real wiring is status_api's)."""
    page = StatusPage(settings, lambda: True, PeerChecker(settings))

    class Handler(BaseHTTPRequestHandler):
        def _route(self, method: str) -> None:
            conn = index.connect(settings.data_dir)
            try:
                if not page.handles(method, self.path.split("?")[0]):
                    self.send_error(404)
                elif method == "GET":
                    page.get(self, conn)
                else:
                    page.post(self, conn)
            finally:
                conn.close()

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    previous = audit.current()
    audit.configure(settings)
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", populated[1], page
    finally:
        audit._process_log = previous
        httpd.shutdown()
        httpd.server_close()


def _state(settings, job_id: int) -> str:
    conn = index.connect(settings.data_dir)
    try:
        return str(conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
    finally:
        conn.close()


def test_retry_needs_the_token_and_same_origin(settings, page_server) -> None:
    base, jobs, page = page_server
    url = f"{base}/jobs/{jobs['dead']}/retry"
    token = {"csrf_token": page.csrf_token}
    refused = [
        httpx.post(url, data={"csrf_token": "guess"}),
        httpx.post(url, data=token, headers={"Origin": "http://evil.example"}),
        httpx.post(url, data=token, headers={"Origin": "null"}),
        httpx.post(url, data=token, headers={"Sec-Fetch-Site": "cross-site"}),
        httpx.post(url, data=token, headers={"Host": "evil.example"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert httpx.get(base + "/", headers={"Host": "rebound.example"}).status_code == 421
    assert _state(settings, jobs["dead"]) == "dead"

    accepted = httpx.post(url, data=token, headers={"Origin": base})
    assert accepted.status_code == 303
    assert accepted.headers["Location"] == f"/?retried={jobs['dead']}&ok=1"
    assert _state(settings, jobs["dead"]) == "queued"
    again = httpx.post(f"{base}/jobs/{jobs['done']}/retry", data=token)
    assert again.headers["Location"].endswith("ok=0")
    assert _state(settings, jobs["done"]) == "done"

    page_html = httpx.get(base + accepted.headers["Location"])
    assert page_html.status_code == 200
    assert f"Job {jobs['dead']} re-queued." in page_html.text
    assert "frame-ancestors 'none'" in page_html.headers["Content-Security-Policy"]
    entries = list(audit.AuditLog.from_settings(settings).entries())
    retried = [e for e in entries if e["event"] == "job_retried"]
    assert [(e["outcome"], e["details"]["job"]) for e in retried] == [
        ("requeued", jobs["dead"]),
        ("not_retryable", jobs["done"]),
    ]


def test_archive_location_is_reportings() -> None:
    from icibenefit.listener import status_page
    from icibenefit.persistence import archive as runner

    assert status_page.FHIR_ARCHIVE == runner.FHIR_ARCHIVE


def test_fhir_target_hides_credentials_in_the_url(make_settings) -> None:
    settings = make_settings(fhir_base_url="https://svc:hunter2@fhir.example.org/R4")
    conn = index.connect(settings.data_dir)
    try:
        page = render(collect(conn, settings), csrf_token="t")
    finally:
        conn.close()
    assert "hunter2" not in page
    assert "https://fhir.example.org/R4" in page


def test_dead_letter_resend_button_requeues_it_once(settings, page_server) -> None:
    base, _jobs, page = page_server
    payload = settings.data_dir / "outbox-payload.json"
    payload.write_text("{}")
    conn = index.connect(settings.data_dir)
    try:
        item = conn.execute(
            "INSERT INTO outbox (kind, dedup_key, payload_path, study_uid, state, attempts,"
            " next_attempt_at, created_at, last_error) VALUES ('fhir', 'k3', ?, ?, 'dead', 10,"
            " 0, 0, 'DeliveryError: FHIR server answered 503')",
            (str(payload), STUDY),
        ).lastrowid
    finally:
        conn.close()
    page_html = httpx.get(base + "/").text
    assert f'action="/outbox/{item}/retry"' in page_html
    token = {"csrf_token": page.csrf_token}

    refused = httpx.post(f"{base}/outbox/{item}/retry", data={"csrf_token": "guess"})
    assert refused.status_code == 403
    accepted = httpx.post(f"{base}/outbox/{item}/retry", data=token, headers={"Origin": base})
    assert accepted.headers["Location"] == f"/?resent={item}&ok=1"
    again = httpx.post(f"{base}/outbox/{item}/retry", data=token)
    assert again.headers["Location"] == f"/?resent={item}&ok=0"
    conn = index.connect(settings.data_dir)
    try:
        row = conn.execute("SELECT state, attempts FROM outbox WHERE id = ?", (item,)).fetchone()
    finally:
        conn.close()
    assert (row["state"], row["attempts"]) == ("queued", 0)
    assert (
        f"Outbox item {item} re-queued for delivery."
        in httpx.get(base + accepted.headers["Location"]).text
    )
    outcomes = [
        e["outcome"]
        for e in audit.AuditLog.from_settings(settings).entries()
        if e["event"] == "outbox_retried"
    ]
    assert outcomes == ["requeued", "refused"]
