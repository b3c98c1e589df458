"""Status HTTP API (loopback by default): ``/health``, ``/metrics`` and JSON lists.

The lists ``/jobs``, ``/studies`` and ``/outbox`` (``?state=`` filters jobs
and outbox items) hold the objects of ``icibenefit jobs|studies|outbox list --json``.
``/`` (and ``POST /jobs/<id>/retry``) are the operators' HTML page, served by
:class:`icibenefit.listener.status_page.StatusPage`.

A stdlib ``ThreadingHTTPServer`` in a daemon thread: five read-only GET routes
do not justify a web framework.  ``/metrics`` is Prometheus text format 0.0.4,
written by hand: prometheus_client was considered, but half of the values
(jobs by state, outbox depth, the latency histogram) live in the shared SQLite
database written by several processes, so they are read at scrape time
rather than kept in a process-local registry.

Hardening: every route checks ``Host`` (421 for a foreign name when bound to
loopback: DNS rebinding must not read ``/studies`` either), every response
carries ``X-Content-Type-Options: nosniff``, a Content-Security-Policy that
allows nothing and ``Cache-Control: no-store``, and a socket timeout per
connection frees the thread of a client that stops sending.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from icibenefit.listener import outbox
from icibenefit.listener.scp import ScpCounters
from icibenefit.listener.status_page import StatusPage
from icibenefit.persistence import index, queries
from icibenefit.persistence.jobs import JOB_STATES
from icibenefit.persistence.outbox import OUTBOX_STATES
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
#: Headers on every JSON and text response (the page sends its own, similar set).
API_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_COUNTER_HELP = {
    "associations": "DICOM associations accepted",
    "rejections": "DICOM associations or connections refused",
    "instances_stored": "Instances stored and indexed",
    "bytes_stored": "Bytes of instances stored",
    "instances_duplicate": "Instances received again (identical or conflicting)",
    "instances_failed": "Instances answered with a failure status",
}


def render_metrics(conn: sqlite3.Connection, counters: ScpCounters) -> str:
    """The Prometheus exposition of the listener's state."""
    lines: list[str] = []
    for name, value in counters.snapshot().items():
        metric = f"icibenefit_{name}_total"
        lines += [f"# HELP {metric} {_COUNTER_HELP[name]}.", f"# TYPE {metric} counter"]
        lines.append(f"{metric} {value}")
    jobs = queries.count_by_state(conn, "jobs", JOB_STATES)
    lines += ["# HELP icibenefit_jobs Jobs by state.", "# TYPE icibenefit_jobs gauge"]
    lines += [f'icibenefit_jobs{{state="{state}"}} {jobs[state]}' for state in JOB_STATES]
    outbox_counts = queries.count_by_state(conn, "outbox", OUTBOX_STATES)
    depth = outbox_counts["queued"] + outbox_counts["sending"]
    lines += [
        "# HELP icibenefit_outbox_depth Outgoing items not yet delivered.",
        "# TYPE icibenefit_outbox_depth gauge",
        f"icibenefit_outbox_depth {depth}",
        "# HELP icibenefit_outbox_dead Outgoing items given up (dead letters).",
        "# TYPE icibenefit_outbox_dead gauge",
        f"icibenefit_outbox_dead {outbox_counts['dead']}",
    ]
    studies = queries.count_studies(conn)
    lines += [
        "# HELP icibenefit_studies Studies in the index.",
        "# TYPE icibenefit_studies gauge",
        f"icibenefit_studies {studies}",
    ]
    latencies = queries.done_job_latencies(conn)
    metric = "icibenefit_processing_latency_seconds"
    lines += [
        f"# HELP {metric} Time from a study becoming stable to its job being done.",
        f"# TYPE {metric} histogram",
    ]
    for bound in LATENCY_BUCKETS:
        count = sum(1 for value in latencies if value <= bound)
        lines.append(f'{metric}_bucket{{le="{bound:g}"}} {count}')
    lines.append(f'{metric}_bucket{{le="+Inf"}} {len(latencies)}')
    lines.append(f"{metric}_sum {sum(latencies):.6f}")
    lines.append(f"{metric}_count {len(latencies)}")
    return "\n".join(lines) + "\n"


class _StatusHttpServer(ThreadingHTTPServer):
    # The default listen backlog of 5 makes a burst of connections wait for SYN
    # retries; each accepted one gets a thread, bounded in time by the timeout.
    request_queue_size = 128


class StatusServer:
    """The HTTP server thread; each request reads the database on its own connection."""

    def __init__(
        self, settings: Settings, counters: ScpCounters, healthy: Callable[[], bool]
    ) -> None:
        self.settings = settings
        self.counters = counters
        self.healthy = healthy
        self.page = StatusPage(settings, healthy)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        if self._httpd is None:
            raise RuntimeError("status server not started")
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        """Bind and serve in a daemon thread."""
        status = self

        class Handler(BaseHTTPRequestHandler):
            # socketserver applies it to the connection's socket: a half-sent
            # request (or an idle keep-alive) ends after this many seconds.
            timeout = self.settings.status_request_timeout_seconds

            def do_GET(self) -> None:
                status._handle(self, "GET")

            def do_POST(self) -> None:
                status._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("status API: " + format, *args)

        self._httpd = _StatusHttpServer(
            (self.settings.status_bind, self.settings.status_port), Handler
        )
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="status-api", daemon=True
        )
        self._thread.start()
        log.info("status API on http://%s:%d", self.settings.status_bind, self.port)

    def stop(self) -> None:
        """Stop serving."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if not self.page.host_allowed(request):
            self._send(request, 421, {"error": "misdirected request: unexpected Host header"})
            return
        try:
            conn = index.connect(self.settings.data_dir)
            try:
                if self.page.handles(method, url.path):
                    (self.page.get if method == "GET" else self.page.post)(request, conn)
                elif method != "GET":
                    self._send(request, 405, {"error": "method not allowed"})
                elif url.path == "/health":
                    ok = self.healthy()
                    queries.check(conn)
                    body: Any = {"status": "ok" if ok else "stopping"}
                    self._send(request, 200 if ok else 503, body)
                elif url.path == "/metrics":
                    text = render_metrics(conn, self.counters)
                    self._send_text(request, 200, text, "text/plain; version=0.0.4")
                elif url.path == "/jobs":
                    state = query.get("state", [None])[0]
                    self._send(request, 200, queries.list_jobs(conn, state))
                elif url.path == "/studies":
                    self._send(request, 200, queries.list_studies(conn))
                elif url.path == "/outbox":
                    self._send_outbox(request, conn, query.get("state", []))
                else:
                    self._send(request, 404, {"error": "not found"})
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.error("status API database error: %s", exc)
            self._send(request, 503, {"status": "database unavailable"})

    def _send_outbox(
        self, request: BaseHTTPRequestHandler, conn: sqlite3.Connection, states: list[str]
    ) -> None:
        """``/outbox[?state=dead&state=queued]``: the objects of ``icibenefit outbox list``."""
        try:
            items = outbox.list_items(conn, self.settings, states)
        except ValueError as exc:
            self._send(request, 400, {"error": str(exc)})
            return
        self._send(request, 200, items)

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, code: int, body: Any) -> None:
        StatusServer._send_text(request, code, json.dumps(body), "application/json")

    @staticmethod
    def _send_text(request: BaseHTTPRequestHandler, code: int, text: str, kind: str) -> None:
        data = text.encode()
        request.send_response(code)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(data)))
        for name, value in API_SECURITY_HEADERS.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)
