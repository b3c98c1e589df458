"""One ``icibenefit serve`` shared by this folder's tests (each sends its own studies)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.listener.server import ListenerProcess
from tests.integration.status_page.page_service import start_page_service


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerProcess]:
    """The running service; killed at the end of the session."""
    server = start_page_service(tmp_path_factory.mktemp("status-page-service"))
    try:
        yield server
    finally:
        server.kill()
