"""Run ``icibenefit serve`` as a real subprocess for integration tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.peers.common import free_port

ICIBENEFIT = str(Path(sys.executable).with_name("icibenefit"))
AE_TITLE = "ICIBENEFIT"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class ListenerProcess:
    """A running ``icibenefit serve`` with its ports, data directory and log."""

    workdir: Path
    settings: dict[str, Any]
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def data_dir(self) -> Path:
        return Path(self.settings["data_dir"])

    @property
    def port(self) -> int:
        return int(self.settings["scp_port"])

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.settings['status_port']}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "serve.log"

    def start(self, timeout: float = 60.0) -> ListenerProcess:
        """Start (or restart) the server and wait until ``/health`` answers."""
        config = self.workdir / "icibenefit.toml"
        config.write_text(
            "".join(f"{key} = {_toml_value(value)}\n" for key, value in self.settings.items())
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ICIBENEFIT_")}
        env.update(self.extra_env)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [ICIBENEFIT, "--config", str(config), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.status_url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()  # never leave a half-started server behind
        raise RuntimeError(f"serve not ready in {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for a graceful exit; return the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def get(self, path: str) -> Any:
        """GET a status API route and decode its JSON."""
        response = httpx.get(self.status_url + path, timeout=10)
        response.raise_for_status()
        return response.json()

    def metrics(self) -> str:
        return httpx.get(self.status_url + "/metrics", timeout=10).text

    def wait_for(self, condition: Any, timeout: float = 60.0, interval: float = 0.2) -> Any:
        """Poll ``condition()`` until truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout} s\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def listener_settings(workdir: Path, **overrides: Any) -> dict[str, Any]:
    """Test defaults: free ports, 1 s quiet period, short retries, recording processor."""
    settings: dict[str, Any] = {
        "data_dir": str(workdir / "data"),
        "scp_ae_title": AE_TITLE,
        "scp_port": free_port(),
        "status_port": free_port(),
        "study_quiet_seconds": 1.0,
        "retry_base_seconds": 0.2,
        "workers": 1,
        "pseudonym_key": "listener-test-key",
        "job_processor": "icibenefit.listener.jobs:build_recording_processor",
    }
    settings.update({k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()})
    return settings


STORESCU_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}


def storescu_command(
    port: int,
    paths: list[Path],
    *,
    calling_ae: str = "TESTSCU",
    called_ae: str = AE_TITLE,
    extra: list[str] | None = None,
    verbose: bool = False,
) -> list[str]:
    """The command line of dcmtk's storescu (never the venv's pynetdicom one).

    Run it with :data:`STORESCU_ENV` (TCP_NODELAY=1, or Nagle costs ~45 ms per
    instance).  ``-R`` proposes only the SOP classes of the files (SEG, SR...).
    """
    command = ["/usr/bin/storescu", "-aet", calling_ae, "-aec", called_ae, "-R", "-nh"]
    if verbose:
        command.append("-v")
    return [*command, *(extra or []), "127.0.0.1", str(port), *map(str, paths)]


def storescu(
    port: int, paths: list[Path], *, timeout: float = 300.0, **options: Any
) -> subprocess.CompletedProcess[str]:
    """Run dcmtk's storescu to completion (options as :func:`storescu_command`)."""
    return subprocess.run(
        storescu_command(port, paths, **options),
        capture_output=True,
        text=True,
        env=STORESCU_ENV,
        timeout=timeout,
        check=False,
    )


def echoscu(
    port: int,
    *,
    calling_ae: str = "TESTSCU",
    called_ae: str = AE_TITLE,
    extra: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """dcmtk's echoscu."""
    command = ["/usr/bin/echoscu", "-aet", calling_ae, "-aec", called_ae, *(extra or [])]
    command += ["127.0.0.1", str(port)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
