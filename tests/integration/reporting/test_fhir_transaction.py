"""The RiskAssessment transaction against a real FHIR R4 server (Medplum, loopback)."""

import httpx
import pytest
from unit.reporting.factories import Case

from icibenefit.reporting.risk_assessment import device_identifier
from icibenefit.reporting.runner import transaction_bundle

pytestmark = pytest.mark.integration


def _post(server, bundle):
    response = httpx.post(
        server.base_url,
        json=bundle,
        headers={"Content-Type": "application/fhir+json", **server.auth_headers},
        timeout=30,
    )
    assert response.status_code < 300, response.text
    return response.json()


def _search(server, resource_type, **params):
    response = httpx.get(
        f"{server.base_url}/{resource_type}", params=params, headers=server.auth_headers, timeout=30
    )
    response.raise_for_status()
    return [e["resource"] for e in response.json().get("entry", [])]


def test_transaction_creates_then_updates_one_risk_assessment(fhir_server):
    patient = _post(
        fhir_server,
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": {"resourceType": "Patient", "identifier": [{"value": "RA-T1"}]},
                    "request": {"method": "POST", "url": "Patient"},
                }
            ],
        },
    )
    patient_id = patient["entry"][0]["response"]["location"].split("/")[1]
    case = Case(patient_id="RA-T1")
    subject = {"reference": f"Patient/{patient_id}"}

    first = case.prediction({"pfs6": 0.7})
    _post(fhir_server, transaction_bundle(first, subject))
    _post(fhir_server, transaction_bundle(first, subject))  # retry
    rerun = case.prediction({"pfs6": 0.4}, labs=("late",))
    _post(fhir_server, transaction_bundle(rerun, subject))

    found = _search(fhir_server, "RiskAssessment", subject=f"Patient/{patient_id}")
    assert len(found) == 1
    assert found[0]["prediction"][0]["probabilityDecimal"] == pytest.approx(0.4)
    performer = found[0]["performer"]["reference"]
    assert performer.startswith("Device/")
    identifier = device_identifier(first)
    devices = _search(
        fhir_server, "Device", identifier=f"{identifier['system']}|{identifier['value']}"
    )
    assert [f"Device/{d['id']}" for d in devices] == [performer]
    assert devices[0]["deviceName"][0]["name"] == first.bundle_name
