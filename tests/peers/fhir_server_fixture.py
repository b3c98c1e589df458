"""A real FHIR R4 server on loopback for integration tests (Medplum's router, in memory).

``tests/peers/fhir_server/server.mjs`` wraps Medplum's ``FhirRouter`` and
``MemoryRepository`` in a Node HTTP server bound to 127.0.0.1 (see its header
for the HTTP API, including the ``/_test/*`` control routes).  This plugin
starts it, waits until it is ready, and hands tests a :class:`FhirServer`.

Fixtures
--------
``fhir_server`` (session)
    One shared server, no auth, default page size 20.  Tests that change its
    data should use unique identifiers or call :meth:`FhirServer.reset` first.
``fhir_server_factory`` (function)
    ``fhir_server_factory(token="s3cret", page_size=2)`` starts a private
    server with other options; every server it started is stopped at teardown.

Loading data: :meth:`FhirServer.load_ndjson` reads a folder of FHIR NDJSON
(e.g. ``small_cohort / "fhir"``) and sends it as transaction Bundles of
``PUT [type]/[id]`` entries, so resources keep their ids (and references
between them stay valid).

Use it as a library outside pytest with :func:`start_fhir_server` (a context manager).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

SERVER_DIR = Path(__file__).parent / "fhir_server"
START_TIMEOUT_SECONDS = 60.0


@dataclass
class FhirServer:
    """A running test FHIR server.

    Attributes
    ----------
    base_url
        FHIR base, e.g. ``http://127.0.0.1:41234/fhir``.
    token
        The bearer token the server requires, or ``None``.
    page_size
        The server's default page size (used when a search has no ``_count``).
    """

    base_url: str
    token: str | None
    page_size: int
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def control_url(self) -> str:
        """Root of the ``/_test/*`` control routes."""
        return self.base_url.rsplit("/fhir", 1)[0] + "/_test"

    @property
    def auth_headers(self) -> dict[str, str]:
        """Headers a client needs to be served (empty without a token)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def settings_overrides(self) -> dict[str, Any]:
        """Settings fields (``make_settings(**server.settings_overrides())``) pointing at it."""
        overrides: dict[str, Any] = {"fhir_base_url": self.base_url}
        if self.token:
            overrides |= {"fhir_auth": "bearer", "fhir_token": self.token}
        return overrides

    # ------------------------------------------------------------------ data

    def load_resources(self, resources: Iterable[dict[str, Any]], batch_size: int = 250) -> int:
        """PUT resources (each must have an id) in transaction Bundles; return how many."""
        total = 0
        batch: list[dict[str, Any]] = []
        for resource in resources:
            batch.append(resource)
            if len(batch) == batch_size:
                total += self._transaction(batch)
                batch = []
        if batch:
            total += self._transaction(batch)
        return total

    def load_ndjson(self, folder: Path) -> int:
        """Load every ``*.ndjson`` of ``folder`` (or ``folder/fhir``); return the count."""
        folder = folder / "fhir" if (folder / "fhir").is_dir() else folder
        files = sorted(folder.glob("*.ndjson"))
        if not files:
            raise FileNotFoundError(f"no NDJSON files in {folder}")

        def resources() -> Iterator[dict[str, Any]]:
            for path in files:
                for line in path.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        yield json.loads(line)

        return self.load_resources(resources())

    def _transaction(self, resources: list[dict[str, Any]]) -> int:
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"{self.base_url}/{r['resourceType']}/{r['id']}",
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in resources
            ],
        }
        response = httpx.post(
            self.base_url,
            json=bundle,
            headers={"Content-Type": "application/fhir+json", **self.auth_headers},
            timeout=60,
        )
        response.raise_for_status()
        statuses = [e["response"]["status"] for e in response.json()["entry"]]
        failed = [s for s in statuses if not s.startswith(("200", "201"))]
        if failed:
            raise RuntimeError(f"transaction entries failed: {failed[:5]}")
        return len(resources)

    # ------------------------------------------------------------------ control

    def _control(self, method: str, route: str, payload: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"{self.control_url}/{route}", json=payload, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        """Drop every resource, pending fault and request record."""
        self._control("POST", "reset")

    def inject_faults(self, status: int, count: int, retry_after: str | int | None = None) -> None:
        """Answer the next ``count`` FHIR requests with ``status`` (and ``Retry-After``)."""
        payload = {"status": status, "count": count}
        if retry_after is not None:
            payload["retryAfter"] = str(retry_after)
        self._control("POST", "faults", payload)

    def outage(self, seconds: float) -> None:
        """Stop listening (connections refused) for ``seconds``, then listen again."""
        self._control("POST", "outage", {"seconds": seconds})
        time.sleep(0.1)  # the server closes its socket right after answering

    def requests(self) -> list[dict[str, Any]]:
        """FHIR requests received so far: ``{"method", "path", "status"}`` (no query)."""
        return list(self._control("GET", "requests")["requests"])

    def stop(self) -> None:
        """Terminate the server process."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed (run `make setup`)")
    if not (SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        raise RuntimeError(f"Medplum packages missing in {SERVER_DIR} (run `make setup`)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    # Medplum needs the WebSocket global, built in from Node 22 (ENVIRONMENT.md).
    return [node, "--experimental-websocket"] if major < 22 else [node]


def _wait_ready(process: subprocess.Popen[bytes], stderr: IO[bytes]) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    buffer = b""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr.seek(0)
            error = stderr.read().decode(errors="replace")
            raise RuntimeError(f"FHIR server exited ({process.returncode}): {error[-2000:]}")
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            buffer += os.read(process.stdout.fileno(), 4096)
            for line in buffer.decode(errors="replace").splitlines():
                if line.startswith("READY "):
                    return line.split(" ", 1)[1].strip()
    process.kill()
    raise RuntimeError(f"FHIR server not ready within {START_TIMEOUT_SECONDS:.0f} s")


@contextmanager
def start_fhir_server(*, page_size: int = 20, token: str | None = None) -> Iterator[FhirServer]:
    """Start a server on a free loopback port (chosen by the OS), stop it on exit."""
    command = [*_node_command(), "server.mjs", "--port", "0", "--page-size", str(page_size)]
    if token:
        command += ["--token", token]
    # stderr goes to a file: a pipe nobody reads could fill up and block the server
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, cwd=SERVER_DIR, stdout=subprocess.PIPE, stderr=stderr)
        server: FhirServer | None = None
        try:
            server = FhirServer(_wait_ready(process, stderr), token, page_size, process)
            yield server
        finally:
            if server is not None:
                server.stop()
            elif process.poll() is None:
                process.kill()
                process.wait(timeout=5)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirServer]:
    """A shared in-memory FHIR R4 server (no auth, page size 20) for the whole session."""
    with start_fhir_server() as server:
        yield server


@pytest.fixture
def fhir_server_factory() -> Iterator[Callable[..., FhirServer]]:
    """Start private servers with options (``token=``, ``page_size=``); all stop at teardown."""
    with ExitStack() as stack:

        def start(**options: Any) -> FhirServer:
            return stack.enter_context(start_fhir_server(**options))

        yield start
