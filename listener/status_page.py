"""The status page: one server-rendered HTML page for the people who run icibenefit.

``GET /`` (and ``/status``) shows recent studies, jobs with their state, attempts
and a retry button, the outbox (depth, dead letters with a re-send button),
recent predictions and the health of the PACS and FHIR connections.
``POST /jobs/<id>/retry`` re-queues a failed or dead job and
``POST /outbox/<id>/retry`` a dead letter (what ``icibenefit outbox retry``
does), then redirect back (POST/redirect/GET).

The page is built in three layers so the HTML is testable without a server:
:func:`collect` reads the index (and the reports archive) into a
:class:`~.status_html.StatusData`; :func:`~.status_html.render` (in
:mod:`.status_html`) is a pure function of that data; the :class:`StatusPage`
handler does the HTTP.

Privacy: no patient name ever reaches this module; patients appear as the
keyed hash the index stores, Study Instance UIDs are shortened to their last
digits (enough to tell studies apart on screen and in a screenshot pasted into
a ticket) next to the audit log's study reference.

Misuse: a retry form is a state change, so it needs (1) POST, (2) the
per-process random token embedded in the page (a cross-site page cannot read
it), (3) an ``Origin``/``Referer``/``Sec-Fetch-Site`` that, when the browser
sends one, names this very origin, and, when the API is bound to loopback (the
default), (4) a ``Host`` header that is a loopback name, which defeats DNS
rebinding.  Responses forbid framing and scripts (Content-Security-Policy).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from icibenefit import audit
from icibenefit.listener.outbox import list_items, pacs_target
from icibenefit.listener.status_html import (
    PeerHealth,
    PredictionRow,
    StatusData,
    render,
)
from icibenefit.persistence import queries
from icibenefit.persistence.archive import FHIR_ARCHIVE, FhirArchive
from icibenefit.persistence.jobs import JOB_STATES, JobQueue
from icibenefit.persistence.outbox import (
    OUTBOX_STATES,
    ItemKind,
    NotRetryableError,
    last_delivery,
    local_dicom_dir,
    local_fhir_dir,
    requeue_dead,
)
from icibenefit.privacy import pseudonymize
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

PAGE_PATHS = frozenset({"/", "/status"})
RETRY_PATH = re.compile(r"/(jobs|outbox)/(\d{1,18})/retry")
RECENT = 25
HEALTH_CACHE_SECONDS = 30.0
HEALTH_TIMEOUT_SECONDS = 3.0
MAX_FORM_BYTES = 4096
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class PeerChecker:
    """Cheap, cached reachability checks: C-ECHO to the PACS, ``GET metadata`` on FHIR.

    A check runs at most every :data:`HEALTH_CACHE_SECONDS` with a
    :data:`HEALTH_TIMEOUT_SECONDS` timeout, under a lock, so a page that is
    reloaded often never floods the PACS or blocks on it for long.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, bool, str]] = {}

    def pacs(self) -> tuple[bool, str, float] | None:
        """``(reachable, detail, checked_at)`` of the PACS, ``None`` when none is configured."""
        if not self.settings.pacs_configured:
            return None
        if self.settings.pacs_destination == "stowrs":
            return self._cached("pacs", self._stow_root)
        return self._cached("pacs", self._echo_pacs)

    def fhir(self) -> tuple[bool, str, float] | None:
        """``(reachable, detail, checked_at)`` of the FHIR server, ``None`` when not configured."""
        if not self.settings.fhir_base_url:
            return None
        return self._cached("fhir", self._fhir_metadata)

    def _cached(self, name: str, check: Callable[[], tuple[bool, str]]) -> tuple[bool, str, float]:
        with self._lock:
            now = self._clock()
            hit = self._cache.get(name)
            if hit is None or now - hit[0] >= HEALTH_CACHE_SECONDS:
                try:
                    ok, detail = check()
                except Exception as exc:  # any failure is "unreachable", with its reason
                    ok, detail = False, f"{type(exc).__name__}: {exc}"
                hit = (now, ok, detail)
                self._cache[name] = hit
            return hit[1], hit[2], hit[0]

    def _echo_pacs(self) -> tuple[bool, str]:
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        settings = self.settings
        ae = AE(ae_title=settings.scp_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = HEALTH_TIMEOUT_SECONDS
        ae.connection_timeout = HEALTH_TIMEOUT_SECONDS
        ae.add_requested_context(Verification)
        assoc = ae.associate(
            str(settings.pacs_host),
            int(settings.pacs_port or 0),
            ae_title=str(settings.pacs_ae_title),
        )
        if not assoc.is_established:
            return False, "association refused or no answer"
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        code = int(getattr(status, "Status", -1)) if status else -1
        return code == 0, "C-ECHO ok" if code == 0 else f"C-ECHO status {code}"

    def _stow_root(self) -> tuple[bool, str]:
        """Whether the STOW-RS origin server answers HTTP (any answer below 500)."""
        settings = self.settings
        credentials = settings.pacs_stow_auth
        response = httpx.get(
            str(settings.pacs_stow_url).rstrip("/") + "/studies",
            params={"limit": "1"},
            headers={"Accept": "application/dicom+json"},
            auth=httpx.BasicAuth(*credentials) if credentials else None,
            timeout=HEALTH_TIMEOUT_SECONDS,
        )
        code = response.status_code
        return code < 500, f"GET studies: HTTP {code}"

    def _fhir_metadata(self) -> tuple[bool, str]:
        import httpx

        url = str(self.settings.fhir_base_url).rstrip("/") + "/metadata"
        response = httpx.get(
            url, timeout=HEALTH_TIMEOUT_SECONDS, headers={"Accept": "application/fhir+json"}
        )
        code = response.status_code
        if code in (401, 403):  # metadata should be public, but some servers guard it
            return True, f"GET metadata: HTTP {code} (answers; asks for authentication)"
        return code == 200, f"GET metadata: HTTP {code}"


def collect(
    conn: sqlite3.Connection,
    settings: Settings,
    checker: PeerChecker | None = None,
    *,
    healthy: bool = True,
    now: float | None = None,
) -> StatusData:
    """Read what the page shows from the index and the reports archive."""
    key = settings.pseudonym_key.get_secret_value()
    studies = queries.list_studies(conn, RECENT)
    jobs = queries.list_jobs(conn, limit=RECENT)
    dead = list_items(conn, settings, ["dead"], RECENT)
    predictions = recent_predictions(conn, settings.data_dir, key)
    uids = {s["study_uid"] for s in studies} | {j["study_uid"] for j in jobs}
    uids |= {d["study_uid"] for d in dead if d["study_uid"]} | {p.study_uid for p in predictions}
    return StatusData(
        generated_at=time.time() if now is None else now,
        healthy=healthy,
        studies=studies,
        jobs=jobs,
        job_counts=queries.count_by_state(conn, "jobs", JOB_STATES),
        outbox_counts=queries.count_by_state(conn, "outbox", OUTBOX_STATES),
        dead_letters=dead,
        predictions=predictions,
        peers=peer_health(conn, settings, checker),
        study_refs={uid: audit.study_reference(uid, key) for uid in uids},
    )


def peer_health(
    conn: sqlite3.Connection, settings: Settings, checker: PeerChecker | None
) -> list[PeerHealth]:
    """Per destination: the last delivery and error from the outbox, plus a live check."""
    peers = []
    kinds: tuple[tuple[ItemKind, str], ...] = (("dicom", "PACS"), ("fhir", "FHIR"))
    for kind, name in kinds:
        delivered, last_error = last_delivery(conn, kind)
        if kind == "dicom":
            pacs = pacs_target(settings)
            configured = pacs is not None
            target = pacs or f"not configured: SRs go to {local_dicom_dir(settings.data_dir)}"
            check = checker.pacs() if checker else None
        else:
            configured = bool(settings.fhir_base_url)
            target = (
                audit.strip_url_credentials(str(settings.fhir_base_url))
                if configured
                else f"not configured: reports go to {local_fhir_dir(settings.data_dir)}"
            )
            check = checker.fhir() if checker else None
        reachable, detail, checked_at = check if check else (None, "", None)
        peers.append(
            PeerHealth(
                name=name,
                target=target,
                configured=configured,
                reachable=reachable,
                detail=detail,
                checked_at=checked_at,
                last_delivered_at=delivered,
                last_error=last_error,
            )
        )
    return peers


def recent_predictions(
    conn: sqlite3.Connection, data_dir: Path, key: str, limit: int = 10
) -> list[PredictionRow]:
    """The newest RiskAssessments in reporting's archive (:data:`FHIR_ARCHIVE` of ``data_dir``).

    The archive holds one FHIR transaction per report, in a folder named by
    the study; the patient hash comes from the index (or, for a study the
    index no longer has, from the RiskAssessment's subject), never a name.
    """
    rows = []
    for path in FhirArchive(data_dir / FHIR_ARCHIVE).newest(limit):
        try:
            bundle = json.loads(path.read_text(encoding="utf-8"))
            risk = next(
                e["resource"]
                for e in bundle.get("entry", [])
                if e.get("resource", {}).get("resourceType") == "RiskAssessment"
            )
        except (OSError, ValueError, StopIteration, AttributeError, TypeError):
            continue
        study_uid = path.parent.name
        found = queries.patient_hash(conn, study_uid)
        subject = risk.get("subject", {})
        subject_key = subject.get("reference") or subject.get("identifier", {}).get("value", "")
        patient_hash = found if found is not None else pseudonymize(str(subject_key), key)
        method = (risk.get("method", {}).get("coding") or [{}])[0]
        endpoints = tuple(
            (
                str((item.get("outcome", {}).get("coding") or [{}])[0].get("code", "?")),
                float(item.get("probabilityDecimal", float("nan"))),
                "high" if _likelihood(item) == "low" else "low",
            )
            for item in risk.get("prediction", [])
        )
        rows.append(
            PredictionRow(
                created=str(risk.get("occurrenceDateTime", "")),
                study_uid=study_uid,
                patient_hash=patient_hash,
                model=f"{method.get('code', '?')} {method.get('version', '')}".strip(),
                endpoints=endpoints,
            )
        )
    return rows


def _likelihood(item: Mapping[str, Any]) -> str:
    codings = item.get("qualitativeRisk", {}).get("coding") or [{}]
    return str(codings[0].get("code", ""))


# --------------------------------------------------------------------------- HTTP

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback_host(host_header: str) -> bool:
    """Whether a ``Host`` header names this machine's loopback (DNS-rebinding guard)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]")[0]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class StatusPage:
    """HTTP side of the page, called by :class:`~icibenefit.listener.status_api.StatusServer`.

    Parameters
    ----------
    settings
        The service settings.
    healthy
        Whether the service is running (not stopping).
    checker
        The cached PACS/FHIR checks (a default one is made from the settings).
    """

    def __init__(
        self,
        settings: Settings,
        healthy: Callable[[], bool],
        checker: PeerChecker | None = None,
    ) -> None:
        self.settings = settings
        self.healthy = healthy
        self.checker = checker or PeerChecker(settings)
        self.csrf_token = secrets.token_urlsafe(32)
        self.loopback_only = _is_loopback_bind(settings.status_bind)

    def handles(self, method: str, path: str) -> bool:
        """Whether ``method path`` is one of the page's routes."""
        if method == "GET":
            return path in PAGE_PATHS
        return method == "POST" and RETRY_PATH.fullmatch(path) is not None

    def get(self, request: BaseHTTPRequestHandler, conn: sqlite3.Connection) -> None:
        """Serve the page."""
        if not self.host_allowed(request):
            self._send(request, 421, "Misdirected request: unexpected Host header.")
            return
        query = parse_qs(urlsplit(request.path).query)
        flash = None
        ok = query.get("ok") == ["1"]
        if "retried" in query:
            job = query["retried"][0]
            flash = (
                f"Job {job} re-queued."
                if ok
                else f"Job {job} was not re-queued (not failed or dead)."
            )
        elif "resent" in query:
            item = query["resent"][0]
            flash = (
                f"Outbox item {item} re-queued for delivery."
                if ok
                else f"Outbox item {item} was not re-queued (not a dead letter, or payload gone)."
            )
        data = collect(conn, self.settings, self.checker, healthy=self.healthy())
        self._send(request, 200, render(data, csrf_token=self.csrf_token, flash=flash), "text/html")

    def post(self, request: BaseHTTPRequestHandler, conn: sqlite3.Connection) -> None:
        """Re-queue the job or dead letter named by the path, after the misuse checks."""
        match = RETRY_PATH.fullmatch(urlsplit(request.path).path)
        problem = self._refuse(request)
        if match is None or problem:
            self._send(request, 403 if match else 404, problem or "Not found.")
            return
        what, item_id = match.group(1), int(match.group(2))
        client = request.client_address[0] if request.client_address else "?"
        actor = f"status page from {client}"
        if what == "jobs":
            retried = JobQueue(conn, self.settings).retry([item_id]) == 1
            audit.record(
                "job_retried",
                component="listener.status_page",
                actor=actor,
                outcome="requeued" if retried else "not_retryable",
                details={"job": item_id},
            )
            location = f"/?retried={item_id}&ok={int(retried)}"
        else:
            try:  # requeue_dead audits both outcomes itself
                requeue_dead(conn, [item_id], actor=actor, component="listener.status_page")
                retried = True
            except NotRetryableError:
                retried = False
            location = f"/?resent={item_id}&ok={int(retried)}"
        log.info("status page: %s %d retry requested from %s (%s)", what, item_id, client, retried)
        request.send_response(303)
        request.send_header("Location", location)
        request.send_header("Content-Length", "0")
        for name, value in SECURITY_HEADERS.items():
            request.send_header(name, value)
        request.end_headers()

    def _refuse(self, request: BaseHTTPRequestHandler) -> str | None:
        """Why the POST is refused, or ``None`` when it may proceed."""
        if not self.host_allowed(request):
            return "Unexpected Host header."
        host = request.headers.get("Host", "")
        for header in ("Origin", "Referer"):
            value = request.headers.get(header)
            if value and (value == "null" or urlsplit(value).netloc != host):
                return f"Cross-origin request ({header})."
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site and fetch_site not in ("same-origin", "none"):
            return "Cross-site request."
        length = int(request.headers.get("Content-Length") or 0)
        if length > MAX_FORM_BYTES:
            return "Form too large."
        form = parse_qs(request.rfile.read(length).decode("ascii", "replace"))
        token = form.get("csrf_token", [""])[0]
        if not hmac.compare_digest(token.encode(), self.csrf_token.encode()):
            return "Missing or stale form token: reload the page and try again."
        return None

    def host_allowed(self, request: BaseHTTPRequestHandler) -> bool:
        """Whether the ``Host`` header may be served (loopback names when bound to loopback)."""
        return not self.loopback_only or is_loopback_host(request.headers.get("Host", ""))

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler, code: int, text: str, kind: str = "text/plain"
    ) -> None:
        body = text.encode()
        request.send_response(code)
        request.send_header("Content-Type", f"{kind}; charset=utf-8")
        request.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)


def _is_loopback_bind(address: str) -> bool:
    try:
        return ip_address(address).is_loopback
    except ValueError:
        return address.lower() in _LOOPBACK_NAMES
