"""Previous surgery: which Procedures count, how the readers fetch them, when it stays unknown."""

import datetime as dt
import logging
from urllib.parse import parse_qs

import httpx
import pytest
from fhir.resources.R4B.procedure import Procedure
from unit.fhir import fhir_samples as s

from icibenefit.errors import FhirError, FhirStatusError
from icibenefit.fhir import NdjsonReader, ReaderClinicalSource, ServerReader, codes
from icibenefit.fhir.client import FhirClient
from icibenefit.fhir.surgery import performed_last_day, previous_surgery
from icibenefit.fhir.timeline import build_clinical_record
from icibenefit.fhir.treatment import TreatmentStart
from icibenefit.synth.fhir_resources import PROCEDURE_CODES

BASE = "https://ehr.example.org/fhir"
PNEUMONECTOMY = {"system": s.SNOMED, "code": "49795001", "display": "Total pneumonectomy"}


def decide(*resources):
    return previous_surgery([Procedure.model_validate(r) for r in resources], s.T0)


def test_a_completed_lung_resection_before_t0_counts():
    assert decide(s.procedure("p1", "pat-a", s.at(-400), s.LOBECTOMY)) is True
    assert decide(s.procedure("p1", "pat-a", s.at(-1), PNEUMONECTOMY)) is True


@pytest.mark.parametrize("day", [0, 1, 30])
def test_a_resection_on_or_after_t0_is_ignored(day):
    assert decide(s.procedure("p1", "pat-a", s.at(day), s.LOBECTOMY)) is False


def test_a_non_thoracic_procedure_is_ignored():
    assert decide(s.procedure("p1", "pat-a", s.at(-900), s.APPENDECTOMY)) is False
    thyroid = s.procedure("p2", "pat-a", s.at(-900), text="Left thyroid lobectomy")
    liver = s.procedure("p3", "pat-a", s.at(-900), text="Liver segmentectomy")
    assert decide(thyroid, liver) is False


@pytest.mark.parametrize("status", ["in-progress", "not-done", "stopped", "entered-in-error"])
def test_a_procedure_that_was_not_completed_is_ignored(status):
    assert decide(s.procedure("p1", "pat-a", s.at(-400), s.LOBECTOMY, status=status)) is False


@pytest.mark.parametrize(
    "text", ["Right upper lobectomy of lung", "VATS wedge resection, lung", "Pneumonectomy"]
)
def test_an_uncoded_resection_counts_by_its_name(text):
    assert decide(s.procedure("p1", "pat-a", s.at(-400), text=text)) is True


@pytest.mark.parametrize(
    ("performed", "expected"),
    [
        ("2015", True),  # the whole year lies before T0 (2024-03-04)
        ("2024-02", True),
        ("2024", False),  # could be after T0: not placed before it
        ("2024-03", False),
        (None, False),  # undated: cannot be placed
    ],
)
def test_partial_and_missing_dates(performed, expected):
    assert decide(s.procedure("p1", "pat-a", performed, s.LOBECTOMY)) is expected


def test_performed_period_start_is_used():
    resource = s.procedure("p1", "pat-a", None, s.LOBECTOMY)
    resource["performedPeriod"] = {"start": s.at(-3).isoformat(), "end": s.at(2).isoformat()}
    model = Procedure.model_validate(resource)
    assert performed_last_day(model) == s.T0 - dt.timedelta(days=3)
    assert previous_surgery([model], s.T0) is True


def test_one_qualifying_procedure_among_others_is_enough():
    resources = [
        s.procedure("p1", "pat-a", s.at(-900), s.APPENDECTOMY),
        s.procedure("p2", "pat-a", s.at(60), PNEUMONECTOMY),
        s.procedure("p3", "pat-a", s.at(-700), s.LOBECTOMY),
    ]
    assert decide(*resources) is True


def _verhoeff_valid(number: str) -> bool:
    """The check digit SNOMED CT identifiers carry (Verhoeff's dihedral-group scheme).

    python-stdnum's ``verhoeff`` does the same; not worth a dependency for one test.
    """
    d = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ]
    p = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ]
    check = 0
    for i, digit in enumerate(reversed(number)):
        check = d[check][p[i % 8][int(digit)]]
    return check == 0


def test_the_code_sets_hold_well_formed_snomed_concept_ids():
    """Catches a mistyped code (e.g. 173171008): a valid check digit, concept partition 00."""
    emitted = {code for code, _ in PROCEDURE_CODES.values()}
    for code in {*codes.THORACIC_SURGERY_BY_SNOMED, *emitted}:
        assert _verhoeff_valid(code), code
        assert code[-3:-1] == "00", code
    assert _verhoeff_valid("173171007")
    assert not _verhoeff_valid("173171008")
    # the generator's lung resections are ones the client recognises, its distractor is not
    thoracic = {PROCEDURE_CODES[k][0] for k in ("lobectomy", "segmentectomy", "pneumonectomy")}
    assert thoracic <= set(codes.THORACIC_SURGERY_BY_SNOMED)
    assert PROCEDURE_CODES["appendectomy"][0] not in codes.THORACIC_SURGERY_BY_SNOMED


def test_record_is_unknown_only_when_procedures_could_not_be_looked_up():
    patient = s.patient("pat-a", "PID-0001")
    treatment = TreatmentStart(s.T0, "pembrolizumab", "MedicationAdministration")
    lobectomy = s.procedure("p1", "pat-a", s.at(-400), s.LOBECTOMY)

    def build(procedures):
        return build_clinical_record("PID-0001", patient, treatment, [], [], procedures)

    assert build(None).previous_surgery is None
    assert build([]).previous_surgery is False
    assert build([lobectomy]).previous_surgery is True


# ---------------------------------------------------------------------- readers


def _searchset(resources):
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def _reader(handler):
    sleeps = []
    client = FhirClient(
        BASE, transport=httpx.MockTransport(handler), sleep=sleeps.append, max_retries=2
    )
    return ServerReader(client), sleeps


def test_server_reader_searches_procedures_by_subject_up_to_a_date():
    forms = []
    lobectomy = s.procedure("p1", "pat-a", s.at(-400), s.LOBECTOMY)

    def handler(request):
        forms.append((request.url.path, parse_qs(request.content.decode())))
        return httpx.Response(200, json=_searchset([lobectomy]))

    reader, _ = _reader(handler)
    assert reader.procedures("Patient/pat-a", dt.date(2024, 3, 5)) == [lobectomy]
    ((path, form),) = forms
    assert path == "/fhir/Procedure/_search"
    assert form["subject"] == ["Patient/pat-a"]
    assert form["date"] == ["le2024-03-05"]


def test_server_reader_retries_an_outage_of_the_procedure_search():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        if len(calls) == 2:
            return httpx.Response(503, headers={"Retry-After": "1"})
        return httpx.Response(200, json=_searchset([]))

    reader, sleeps = _reader(handler)
    assert reader.procedures("Patient/pat-a", s.T0) == []
    assert len(calls) == 3
    assert sleeps[1] == 1.0


def test_server_reader_propagates_an_outage_that_lasts():
    def handler(request):
        return httpx.Response(503)

    reader, sleeps = _reader(handler)
    with pytest.raises(FhirError):
        reader.procedures("Patient/pat-a", s.T0)
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [400, 403, 404, 501])
def test_a_server_that_refuses_the_procedure_search_leaves_surgery_unknown(status, caplog):
    def handler(request):
        return httpx.Response(status, json={"resourceType": "OperationOutcome", "issue": []})

    reader, sleeps = _reader(handler)
    with caplog.at_level(logging.WARNING):
        assert reader.procedures("Patient/pat-secret", s.T0) is None
    assert not sleeps  # a refusal is not retried
    assert "Procedure" in caplog.text
    assert "pat-secret" not in caplog.text


def test_failed_authentication_is_not_taken_for_a_refusal():
    def handler(request):
        return httpx.Response(401, json={"resourceType": "OperationOutcome", "issue": []})

    reader, _ = _reader(handler)
    with pytest.raises(FhirStatusError) as info:
        reader.procedures("Patient/pat-a", s.T0)
    assert info.value.status_code == 401


def test_ndjson_reader_mirrors_the_date_search(tmp_path):
    resources = [
        s.patient("pat-a", "PID-0001"),
        s.procedure("before", "pat-a", s.at(-400), s.LOBECTOMY),
        s.procedure("on-end", "pat-a", s.at(1, 23), s.LOBECTOMY),
        s.procedure("after", "pat-a", s.at(2), s.LOBECTOMY),
        s.procedure("year", "pat-a", "2024", s.LOBECTOMY),  # starts 2024-01-01: matches le
        s.procedure("undated", "pat-a", None, s.LOBECTOMY),
        s.procedure("other-patient", "pat-b", s.at(-400), s.LOBECTOMY),
    ]
    s.write_ndjson(tmp_path, resources)
    found = NdjsonReader(tmp_path).procedures("Patient/pat-a", s.T0 + dt.timedelta(days=1))
    assert sorted(r["id"] for r in found or []) == ["before", "on-end", "year"]
    # a folder without Procedure NDJSON has none, like a server's empty search
    s.write_ndjson(tmp_path / "bare", [s.patient("pat-a", "PID-0001")])
    assert NdjsonReader(tmp_path / "bare").procedures("Patient/pat-a", s.T0) == []


def test_source_sets_previous_surgery_from_the_procedures(tmp_path):
    with_surgery = [*s.sample_patient(), s.procedure("p1", "pat-a", s.at(-400), s.LOBECTOMY)]
    s.write_ndjson(tmp_path / "yes", with_surgery)
    s.write_ndjson(tmp_path / "no", s.sample_patient())
    for folder, expected in (("yes", True), ("no", False)):
        source = ReaderClinicalSource(NdjsonReader(tmp_path / folder), pseudonym_key="k")
        assert source.clinical_record("PID-0001").previous_surgery is expected
