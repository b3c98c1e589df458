import email.utils
import json
import logging
import time
from urllib.parse import parse_qs

import httpx
import pytest

from icibenefit.errors import FhirError, FhirStatusError
from icibenefit.fhir.client import FhirClient, parse_retry_after, redact_url

BASE = "https://ehr.example.org/fhir"


def bundle(ids, next_url=None):
    body = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": i}, "search": {"mode": "match"}}
            for i in ids
        ],
    }
    if next_url:
        body["link"] = [{"relation": "next", "url": next_url}]
    return body


def make_client(handler, **kwargs):
    sleeps = []
    client = FhirClient(BASE, transport=httpx.MockTransport(handler), sleep=sleeps.append, **kwargs)
    return client, sleeps


def test_search_posts_a_form_and_follows_next_links():
    seen = []

    def handler(request):
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(200, json=bundle(["a", "b"], f"{BASE}?page=2"))
        if request.url.params["page"] == "2":
            return httpx.Response(200, json=bundle(["c", "d"], f"{BASE}?page=3"))
        return httpx.Response(200, json=bundle(["e"]))

    client, _ = make_client(handler, page_size=2)
    resources = client.search(
        "Patient", {"identifier": "urn:x|P1", "date": ["ge2024-01-01", "le2024-02-01"]}
    )
    assert [r["id"] for r in resources] == ["a", "b", "c", "d", "e"]
    assert seen[0].url.path == "/fhir/Patient/_search"
    form = parse_qs(seen[0].content.decode())
    assert form == {
        "_count": ["2"],
        "identifier": ["urn:x|P1"],
        "date": ["ge2024-01-01", "le2024-02-01"],
    }
    assert "P1" not in str(seen[0].url)  # the identifier travels in the body only
    assert len(seen) == 3


def test_next_link_to_another_server_is_refused():
    def handler(request):
        return httpx.Response(200, json=bundle(["a"], "https://evil.example.com/fhir?page=2"))

    client, _ = make_client(handler)
    with pytest.raises(FhirError, match="another server"):
        client.search("Patient", {})


def test_repeating_next_link_stops():
    def handler(request):
        return httpx.Response(200, json=bundle(["a"], f"{BASE}?page=2"))

    client, _ = make_client(handler)
    with pytest.raises(FhirError, match="repeats"):
        client.search("Patient", {})


def test_retries_5xx_with_exponential_backoff_then_succeeds():
    answers = iter([503, 502, 500, 200])

    def handler(request):
        status = next(answers)
        return httpx.Response(status, json={"resourceType": "Patient", "id": "x"})

    client, sleeps = make_client(handler, backoff_seconds=0.5, max_retries=5)
    assert client.read("Patient", "x")["id"] == "x"
    assert sleeps == [0.5, 1.0, 2.0]


def test_retry_after_seconds_is_honoured():
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(200, json={"resourceType": "Patient"}),
        ]
    )
    client, sleeps = make_client(lambda request: next(answers))
    client.read("Patient", "x")
    assert sleeps == [7.0]


def test_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(when) <= 31
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None


def test_connection_errors_are_retried_and_finally_reported():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    client, sleeps = make_client(
        handler, max_retries=3, backoff_seconds=1.0, max_backoff_seconds=3.0
    )
    with pytest.raises(FhirError, match="unreachable"):
        client.read("Patient", "x")
    assert len(calls) == 4
    assert sleeps == [1.0, 2.0, 3.0]


def test_client_errors_are_not_retried():
    calls = []

    def handler(request):
        calls.append(request)
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": "bad param"}],
        }
        return httpx.Response(400, json=outcome)

    client, sleeps = make_client(handler)
    with pytest.raises(FhirStatusError, match="bad param") as info:
        client.search("Observation", {"foo": "1"})
    assert info.value.status_code == 400
    assert len(calls) == 1
    assert sleeps == []


def test_persistent_503_gives_up_with_the_status():
    client, sleeps = make_client(lambda request: httpx.Response(503), max_retries=2)
    with pytest.raises(FhirStatusError) as info:
        client.read("Patient", "x")
    assert info.value.status_code == 503
    assert len(sleeps) == 2


def test_transaction_posts_to_the_base():
    def handler(request):
        assert request.url == httpx.URL(BASE + "/")
        assert json.loads(request.content)["type"] == "transaction"
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response"})

    client, _ = make_client(handler)
    assert (
        client.transaction({"resourceType": "Bundle", "type": "transaction"})["type"]
        == "transaction-response"
    )


def test_httpx_log_lines_carry_no_identifiers(caplog):
    def handler(request):
        return httpx.Response(200, json=bundle([]))

    client, _ = make_client(handler)
    with caplog.at_level(logging.DEBUG):
        client.request("GET", "Observation?subject=Patient/SECRET-ID")
        client.read("Patient", "SECRET-ID")
    assert any("Observation" in r.getMessage() for r in caplog.records)
    assert not any("SECRET-ID" in r.getMessage() for r in caplog.records)


def test_redact_url():
    assert (
        redact_url(httpx.URL("http://h:1/fhir/Patient/123/_history/4?identifier=x"))
        == "http://h:1/fhir/Patient/*/_history/*?*"
    )
    assert (
        redact_url(httpx.URL("http://h/fhir/Observation/_search"))
        == "http://h/fhir/Observation/_search"
    )


def test_server_reader_asks_for_labs_in_a_date_window_by_loinc():
    import datetime as dt

    from icibenefit.fhir.readers import ServerReader

    forms = []

    def handler(request):
        forms.append((request.url.path, parse_qs(request.content.decode())))
        return httpx.Response(200, json=bundle([]))

    reader = ServerReader(make_client(handler)[0])
    reader.lab_observations("Patient/p1", dt.date(2024, 1, 1), dt.date(2024, 3, 1))
    reader.patients_by_identifier("A|1", "urn:oid:1.2")
    reader.for_patient("MedicationAdministration", "Patient/p1")
    (path, labs), (_, patients), (_, meds) = forms
    assert path == "/fhir/Observation/_search"
    assert labs["subject"] == ["Patient/p1"]
    assert labs["date"] == ["ge2024-01-01", "le2024-03-01"]
    assert "http://loinc.org|6690-2" in labs["code"][0].split(",")
    assert patients["identifier"] == ["urn:oid:1.2|A\\|1"]
    assert meds["_include"] == ["MedicationAdministration:medication"]
