"""Retries, Retry-After, outages and bearer tokens against the real FHIR server."""

import logging
import time

import pytest
from peers.fhir_server_fixture import start_fhir_server
from unit.fhir.fhir_samples import sample_patient

from icibenefit.errors import FhirError, FhirStatusError
from icibenefit.fhir import (
    BearerAuth,
    FhirClient,
    ReaderClinicalSource,
    ServerReader,
    clinical_source_from_settings,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server():
    # faults and outages are transient, so the tests of this module share one server
    with start_fhir_server() as server:
        server.load_resources(sample_patient())
        yield server


def source_for(client):
    return ReaderClinicalSource(ServerReader(client), pseudonym_key="site-key")


def test_server_down_then_up_is_retried(server, caplog):
    client = FhirClient(server.base_url, backoff_seconds=0.4, max_retries=6)
    expected = source_for(client).clinical_record("PID-0001")
    server.outage(1.5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="icibenefit.fhir.client"):
        record = source_for(client).clinical_record("PID-0001")
    assert record == expected
    assert time.monotonic() - started >= 1.0  # it did wait for the server to come back
    assert any("retry" in r.getMessage() for r in caplog.records)


def test_server_down_for_good_is_reported(fhir_server_factory):
    server = fhir_server_factory()
    client = FhirClient(server.base_url, backoff_seconds=0.05, max_retries=2)
    server.stop()
    with pytest.raises(FhirError, match="unreachable"):
        client.read("Patient", "pat-a")


def test_429_retry_after_is_honoured(server):
    # a tiny backoff: only honouring Retry-After makes the client wait a whole second
    client = FhirClient(server.base_url, backoff_seconds=0.01)
    server.inject_faults(429, count=1, retry_after=1)
    started = time.monotonic()
    assert client.read("Patient", "pat-a")["id"] == "pat-a"
    assert time.monotonic() - started >= 1.0
    assert [r["status"] for r in server.requests()[-2:]] == [429, 200]


def test_503_bursts_are_retried_with_backoff(server):
    client = FhirClient(server.base_url, backoff_seconds=0.05)
    server.inject_faults(503, count=3)
    assert client.read("Patient", "pat-a")["id"] == "pat-a"
    assert [r["status"] for r in server.requests()[-4:]] == [503, 503, 503, 200]


def test_unknown_search_parameters_are_refused_not_ignored(server):
    client = FhirClient(server.base_url)
    with pytest.raises(FhirStatusError) as info:
        client.search("Observation", {"no-such-param": "1"})
    assert info.value.status_code == 400
    with pytest.raises(FhirStatusError):
        client.search("Observation", {"value-quantity": "gt5"})


def test_bearer_token_required(fhir_server_factory, make_settings):
    server = fhir_server_factory(token="s3cret-token")
    server.load_resources(sample_patient())
    with pytest.raises(FhirStatusError) as info:
        FhirClient(server.base_url).read("Patient", "pat-a")
    assert info.value.status_code == 401
    with pytest.raises(FhirStatusError):
        FhirClient(server.base_url, auth=BearerAuth("wrong")).read("Patient", "pat-a")
    served = FhirClient(server.base_url, auth=BearerAuth("s3cret-token"))
    assert served.read("Patient", "pat-a")["id"] == "pat-a"
    settings = make_settings(**server.settings_overrides())
    record = clinical_source_from_settings(settings).clinical_record("PID-0001")
    assert record.fhir_patient_id == "pat-a"
