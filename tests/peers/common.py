"""Small fixtures every test area uses: free ports, settings, log capture."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from icibenefit.settings import Settings, load_settings


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Build settings isolated from the caller's ICIBENEFIT_* environment."""
    import os

    for name in list(os.environ):
        if name.startswith("ICIBENEFIT_"):
            monkeypatch.delenv(name)

    def build(**overrides: object) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "data")
        return load_settings(None, **overrides)

    return build
