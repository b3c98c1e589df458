"""The status HTTP server under misuse (issue 18 point 9): Host, headers, slow clients."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.listener.server import ListenerProcess

pytestmark = pytest.mark.integration

ROUTES = ("/health", "/metrics", "/jobs", "/studies", "/outbox", "/")
TIMEOUT = 5.0


def _threads(server: ListenerProcess) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def test_every_route_checks_host_and_sends_security_headers(start_listener) -> None:
    server = start_listener()
    for route in ROUTES:
        rebound = httpx.get(server.status_url + route, headers={"Host": "evil.example:8484"})
        assert rebound.status_code == 421, route
        assert "evil" not in rebound.text
        response = httpx.get(server.status_url + route)
        assert response.status_code == 200, route
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", route
        assert "default-src 'none'" in headers["content-security-policy"], route
        assert "frame-ancestors 'none'" in headers["content-security-policy"], route
        assert headers["cache-control"] == "no-store", route
    local = httpx.get(server.status_url + "/studies", headers={"Host": "localhost"})
    assert local.status_code == 200


def test_half_sent_requests_time_out(start_listener) -> None:
    server = start_listener(status_request_timeout_seconds=TIMEOUT)
    port = int(server.settings["status_port"])
    before = _threads(server)
    slow = []
    started = time.monotonic()
    for _ in range(300):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /studies HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
        slow.append(sock)
    opened = time.monotonic()
    assert opened - started < TIMEOUT  # accepted at once, not after SYN retries
    assert _threads(server) > before + 100  # one thread each, for now ...
    assert httpx.get(server.status_url + "/health", timeout=10).status_code == 200
    deadline = time.monotonic() + TIMEOUT + 15
    while _threads(server) > before + 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _threads(server) <= before + 5  # ... freed after the timeout
    for sock in slow:
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(65536):  # a 408 at most, then closed by the server
                pass
        sock.close()
    assert httpx.get(server.status_url + "/studies", timeout=10).status_code == 200
