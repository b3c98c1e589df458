"""Fixtures shared by the integration tests of every area."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.listener.server import ListenerProcess, listener_settings


@pytest.fixture
def start_listener(tmp_path: Path) -> Iterator[Callable[..., ListenerProcess]]:
    """``start_listener(**settings)`` runs ``icibenefit serve``; all are killed at teardown."""
    started: list[ListenerProcess] = []

    def start(extra_env: dict[str, str] | None = None, **overrides: Any) -> ListenerProcess:
        workdir = tmp_path / f"listener{len(started)}"
        workdir.mkdir()
        server = ListenerProcess(workdir, listener_settings(workdir, **overrides), extra_env or {})
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()
