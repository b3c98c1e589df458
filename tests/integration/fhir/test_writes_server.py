"""Idempotent writes against the real FHIR server."""

import pytest

from icibenefit.fhir import FhirClient, create_or_get, update_conditional

pytestmark = pytest.mark.integration


def risk(value, status="final"):
    return {
        "resourceType": "RiskAssessment",
        "identifier": [{"system": "urn:icibenefit:test:risk", "value": value}],
        "status": status,
        "subject": {"reference": "Patient/whoever"},
    }


def test_create_or_get_creates_once(fhir_server):
    client = FhirClient(fhir_server.base_url)
    first = create_or_get(client, risk("create-once"))
    again = create_or_get(client, risk("create-once"))
    assert first.created
    assert not again.created
    assert again.resource["id"] == first.resource["id"]
    found = client.search("RiskAssessment", {"identifier": "urn:icibenefit:test:risk|create-once"})
    assert len(found) == 1


def test_conditional_update_creates_then_replaces(fhir_server):
    client = FhirClient(fhir_server.base_url)
    created = update_conditional(client, risk("update-me", status="preliminary"))
    updated = update_conditional(client, risk("update-me", status="final"))
    assert created.created
    assert not updated.created
    assert updated.resource["id"] == created.resource["id"]
    stored = client.read("RiskAssessment", created.resource["id"])
    assert stored["status"] == "final"
