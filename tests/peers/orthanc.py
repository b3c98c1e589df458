"""A real Orthanc for integration tests (fixture plugin).

Usage::

    def test_something(orthanc):            # a plain Orthanc, defaults below
        orthanc.upload(path)                # POST /instances
        assert orthanc.find_instance(sop_uid) is not None

    def test_routing(start_orthanc):        # configured Orthanc(s)
        pacs = start_orthanc(
            modalities={"ICIBENEFIT": ("ICIBENEFIT", "127.0.0.1", scp_port)},
            lua_scripts=[ROUTE_LUA],
            stable_age=1,
        )
        pacs.rest.get("/studies").json()    # httpx client bound to pacs.url

``start_orthanc(**options)`` starts ``/usr/sbin/Orthanc`` with a generated
configuration on free loopback ports, waits until ``/system`` answers, and
returns an :class:`OrthancPeer`; every Orthanc started by the fixture is killed
at teardown (its log is printed on failure by pytest's captured output).
Options: ``aet`` (default ``ORTHANC``), ``modalities`` (name -> (AET, host,
port)), ``lua_scripts`` (paths), ``stable_age`` (seconds, default 1),
``dicomweb`` (load the DICOMweb plugin), ``auth`` ((user, password): HTTP basic
authentication required, the REST client sends it), ``config`` (extra top-level keys).

Orthanc has no bind-address option and listens on every interface:
``make test`` runs the suite in a loopback-only network namespace.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from peers.common import free_port

ORTHANC_BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass
class OrthancPeer:
    """A running Orthanc: where it listens and a REST client."""

    url: str
    http_port: int
    dicom_port: int
    aet: str
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    rest: httpx.Client = field(repr=False)

    def upload(self, path: Path) -> dict[str, Any]:
        """Store one DICOM file through ``POST /instances``; return Orthanc's answer."""
        response = self.rest.post("/instances", content=path.read_bytes())
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def find(self, level: str, query: dict[str, str]) -> list[str]:
        """Orthanc ids of resources matching a ``/tools/find`` query."""
        response = self.rest.post("/tools/find", json={"Level": level, "Query": query})
        response.raise_for_status()
        ids: list[str] = response.json()
        return ids

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """The Orthanc id of an instance by SOP Instance UID, or ``None``."""
        found = self.find("Instance", {"SOPInstanceUID": sop_instance_uid})
        return found[0] if found else None

    def wait_for(
        self, condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2
    ) -> Any:
        """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"Orthanc condition not met within {timeout} s\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The end of Orthanc's log, for assertion messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Kill Orthanc and close the client."""
        self.rest.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def launch_orthanc(
    workdir: Path,
    *,
    aet: str = "ORTHANC",
    modalities: dict[str, tuple[str, str, int]] | None = None,
    lua_scripts: list[Path] | None = None,
    stable_age: int = 1,
    dicomweb: bool = False,
    auth: tuple[str, str] | None = None,
    config: dict[str, Any] | None = None,
    ready_timeout: float = 30.0,
) -> OrthancPeer:
    """Start Orthanc in ``workdir`` and wait until its REST API answers."""
    if shutil.which(ORTHANC_BINARY) is None:
        raise RuntimeError(f"{ORTHANC_BINARY} is missing (make setup installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    while dicom_port == http_port:
        dicom_port = free_port()
    settings: dict[str, Any] = {
        "Name": f"test-{aet}",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": auth is not None,
        "RegisteredUsers": {auth[0]: auth[1]} if auth else {},
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {
            name: {"AET": peer_aet, "Host": host, "Port": port}
            for name, (peer_aet, host, port) in (modalities or {}).items()
        },
        "StableAge": stable_age,
        "LuaScripts": [str(path) for path in lua_scripts or []],
        "Plugins": [DICOMWEB_PLUGIN] if dicomweb else [],
        "HttpTimeout": 60,
        **(config or {}),
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(settings, indent=2))
    log_path = workdir / "orthanc.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [ORTHANC_BINARY, str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{http_port}"
    peer = OrthancPeer(
        url=url,
        http_port=http_port,
        dicom_port=dicom_port,
        aet=aet,
        workdir=workdir,
        log_path=log_path,
        process=process,
        rest=httpx.Client(base_url=url, timeout=30.0, auth=auth),
    )
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}:\n{peer.log_tail()}")
        try:
            if peer.rest.get("/system").status_code == 200:
                return peer
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    peer.stop()
    raise RuntimeError(f"Orthanc not ready within {ready_timeout} s:\n{peer.log_tail()}")


@pytest.fixture
def start_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., OrthancPeer]]:
    """Factory fixture: ``start_orthanc(**options)`` -> :class:`OrthancPeer` (see module doc)."""
    started: list[OrthancPeer] = []

    def start(**options: Any) -> OrthancPeer:
        peer = launch_orthanc(tmp_path_factory.mktemp("orthanc"), **options)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture
def orthanc(start_orthanc: Callable[..., OrthancPeer]) -> OrthancPeer:
    """A plain Orthanc (AET ``ORTHANC``, no modalities, no Lua, StableAge 1 s)."""
    return start_orthanc()
