"""Real linters accept the deployment files."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts the unit.

    verify insists that ExecStart's binary exists, so the check runs on a copy
    whose ExecStart points at a stand-in executable; nothing else is changed.
    """
    stand_in = tmp_path / "icibenefit"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "icibenefit.service"
    text = (DEPLOY / "icibenefit.service").read_text()
    assert "/opt/icibenefit/bin/icibenefit " in text
    unit.write_text(text.replace("/opt/icibenefit/bin/icibenefit ", f"{stand_in} "))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_passes_the_compose_schema() -> None:
    """``docker-compose config`` validates against the Compose schema without an engine."""
    result = subprocess.run(
        ["docker-compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
