"""The FHIR server fixture itself: failures surface with the server's own message."""

import httpx
import pytest
from peers.fhir_server_fixture import start_fhir_server

pytestmark = pytest.mark.integration


def test_a_server_that_cannot_start_reports_why():
    with (
        pytest.raises(RuntimeError, match="page-size must be a positive integer"),
        start_fhir_server(page_size=0),
    ):
        pass


def test_reset_empties_the_server(fhir_server_factory):
    server = fhir_server_factory(page_size=5)
    assert server.load_resources([{"resourceType": "Patient", "id": "p1"}]) == 1
    server.reset()
    assert server.requests() == []
    assert httpx.get(f"{server.base_url}/Patient/p1").status_code == 404
