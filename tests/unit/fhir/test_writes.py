import json

import httpx
import pytest
from fhir.resources.R4B.device import Device

from icibenefit.errors import FhirError, FhirStatusError
from icibenefit.fhir import FhirClient, create_or_get, update_conditional

BASE = "https://ehr.example.org/fhir"
RISK = {
    "resourceType": "RiskAssessment",
    "identifier": [{"system": "urn:icibenefit:risk", "value": "study-1|v1"}],
    "status": "final",
    "subject": {"reference": "Patient/p"},
}


def client_for(handler):
    return FhirClient(BASE, transport=httpx.MockTransport(handler), sleep=lambda _: None)


def test_create_or_get_sends_if_none_exist():
    seen = []

    def handler(request):
        seen.append(request)
        body = json.loads(request.content) | {"id": "r1"}
        return httpx.Response(201 if len(seen) == 1 else 200, json=body)

    client = client_for(handler)
    first = create_or_get(client, RISK)
    second = create_or_get(client, RISK)
    assert (first.created, second.created) == (True, False)
    assert first.reference == "RiskAssessment/r1"
    assert seen[0].method == "POST"
    assert seen[0].url.path == "/fhir/RiskAssessment"
    assert seen[0].headers["If-None-Exist"] == "identifier=urn:icibenefit:risk|study-1\\|v1"


def test_create_or_get_finds_the_resource_when_the_server_returns_no_body():
    def handler(request):
        if request.method == "POST" and request.url.path.endswith("/_search"):
            entry = {"resource": RISK | {"id": "r9"}, "search": {"mode": "match"}}
            return httpx.Response(
                200, json={"resourceType": "Bundle", "type": "searchset", "entry": [entry]}
            )
        return httpx.Response(200)

    assert create_or_get(client_for(handler), RISK).resource["id"] == "r9"


def test_update_conditional_puts_by_identifier_and_accepts_models():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(201, json=json.loads(request.content) | {"id": "d1"})

    device = Device.model_validate(
        {
            "resourceType": "Device",
            "id": "local",
            "identifier": [{"system": "urn:dev", "value": "icibenefit-1.0"}],
        }
    )
    result = update_conditional(client_for(handler), device)
    assert result.created
    assert seen[0].method == "PUT"
    assert seen[0].url.path == "/fhir/Device"
    assert seen[0].url.params["identifier"] == "urn:dev|icibenefit-1.0"
    assert "id" not in json.loads(seen[0].content)


def test_invalid_resources_are_not_sent():
    def handler(request):
        raise AssertionError("nothing may be sent")

    with pytest.raises(FhirError, match="status"):
        create_or_get(client_for(handler), RISK | {"status": 12})
    with pytest.raises(FhirError, match="identifier"):
        create_or_get(client_for(handler), {k: v for k, v in RISK.items() if k != "identifier"})


def test_several_matches_surface_as_412():
    client = client_for(lambda request: httpx.Response(412))
    with pytest.raises(FhirStatusError) as info:
        update_conditional(client, RISK)
    assert info.value.status_code == 412
