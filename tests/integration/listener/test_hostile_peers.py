"""Hostile peers (issue 18 point 1): silent, half-sent and unauthorised connections.

Hostile raw sockets connect from 127.0.0.2 (any 127/8 address reaches the
loopback listener), the legitimate dcmtk storescu from 127.0.0.1, so the
per-source limit is exercised separately from the total one.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.integration.listener.dicom_factory import write_ct_series
from tests.integration.listener.server import AE_TITLE, storescu

pytestmark = pytest.mark.integration

HOSTILE = "127.0.0.2"
TIMEOUT = 2.0
PER_SOURCE = 4
SETTINGS = {
    "scp_acse_timeout_seconds": TIMEOUT,
    "scp_read_timeout_seconds": TIMEOUT,
    "scp_network_timeout_seconds": TIMEOUT,
    "scp_max_associations_per_source": PER_SOURCE,
    "scp_max_associations": 16,
    "allowed_calling_ae_titles": ["TESTSCU"],
}


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), source_address=(HOSTILE, 0))
    sock.settimeout(0.2)
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the listener closed ``sock`` (EOF or reset), without blocking long."""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _wait_closed(socks: list[socket.socket], within: float) -> float:
    """Seconds until every socket was closed by the listener; fail after ``within``."""
    started = time.monotonic()
    open_ = list(socks)
    while open_ and time.monotonic() - started < within:
        open_ = [sock for sock in open_ if not _closed_by_peer(sock)]
    assert not open_, f"{len(open_)} connections still open after {within} s"
    return time.monotonic() - started


def _half_associate_rq() -> bytes:
    """The first 42 bytes of an A-ASSOCIATE-RQ that announces 200."""
    body = struct.pack(">HH", 1, 0) + AE_TITLE.encode().ljust(16) + b"TESTSCU".ljust(16)
    return struct.pack(">BBI", 0x01, 0, 200) + body[:36]


def test_idle_and_half_sent_connections_do_not_block_a_sender(
    start_listener, tmp_path: Path
) -> None:
    # Longer ACSE/read timeouts here: the listen backlog delays some connects by 1 s.
    slow = TIMEOUT * 3
    timeouts = {"scp_acse_timeout_seconds": slow, "scp_read_timeout_seconds": slow}
    server = start_listener(**{**SETTINGS, **timeouts})
    series = write_ct_series(tmp_path / "ct", 3)
    idle = [_connect(server.port) for _ in range(10)]
    half = [_connect(server.port) for _ in range(2)]
    for sock in half:
        sock.sendall(_half_associate_rq())
    time.sleep(1.0)
    refused = [sock for sock in idle + half if _closed_by_peer(sock)]
    held = [sock for sock in idle + half if sock not in refused]
    assert len(held) == PER_SOURCE  # the rest were closed at once
    assert "per-source connection limit reached" in server.log()

    # While the hostile peer holds every slot it may, a legitimate sender is served.
    started = time.monotonic()
    sent = storescu(server.port, series.files, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert time.monotonic() - started < slow / 2  # no waiting for the timeouts

    # The listener closes the silent and the half-sent ones after its timeouts.
    assert _wait_closed(held, slow + 5) < slow + 5
    for sock in idle + half:
        sock.close()
    again = storescu(server.port, series.files, timeout=60)
    assert again.returncode == 0, again.stderr
    assert server.process is not None
    assert server.process.poll() is None


def test_half_sent_pdata_and_idle_association_are_closed(start_listener) -> None:
    server = start_listener(**SETTINGS)
    scu = AE(ae_title="TESTSCU")
    scu.add_requested_context(Verification)
    stuck = scu.associate("127.0.0.1", server.port, ae_title=AE_TITLE)
    idle = scu.associate("127.0.0.1", server.port, ae_title=AE_TITLE)
    assert stuck.is_established
    assert idle.is_established
    raw = stuck.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    raw.sendall(struct.pack(">BBI", 0x04, 0, 1000) + b"\x00" * 100)  # half a P-DATA-TF
    deadline = time.monotonic() + TIMEOUT + 5
    while (stuck.is_established or idle.is_established) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not stuck.is_established, "half-sent P-DATA connection still open"
    assert not idle.is_established, "idle association still open"


def test_unauthorised_calling_ae_does_not_hold_slots(start_listener, tmp_path: Path) -> None:
    server = start_listener(**SETTINGS)
    intruder = AE(ae_title="INTRUDER")
    intruder.add_requested_context(Verification)
    started = time.monotonic()
    for _ in range(3 * PER_SOURCE):
        assoc = intruder.associate("127.0.0.1", server.port, ae_title=AE_TITLE)
        # rejected, or (under load, while the last rejected thread ends) refused
        # by the per-source limit: never established, never waiting for a timeout
        assert not assoc.is_established
    assert time.monotonic() - started < TIMEOUT * 2  # each dropped at once
    series = write_ct_series(tmp_path / "ct", 2)
    sent = storescu(server.port, series.files, timeout=60)
    assert sent.returncode == 0, sent.stderr
    [rejections] = [
        line for line in server.metrics().splitlines() if line.startswith("icibenefit_rejections")
    ]
    assert int(rejections.split()[1]) >= 3 * PER_SOURCE
