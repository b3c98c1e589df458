"""The synthetic cohort through a real FHIR server equals the generator's ground truth."""

import json
import logging
import math
import re

import pytest

from icibenefit.domain import CANONICAL_UNIT, Analyte
from icibenefit.fhir import FhirClient, NdjsonReader, ReaderClinicalSource, ServerReader

pytestmark = pytest.mark.integration


def server_source(server, page_size=100):
    client = FhirClient(server.base_url, page_size=page_size, backoff_seconds=0.05)
    return ReaderClinicalSource(ServerReader(client), pseudonym_key="site-key")


def test_every_record_equals_the_ground_truth(cohort_server, ground_truth):
    source = server_source(cohort_server)
    for patient_id, truth in ground_truth.items():
        assert source.clinical_record(patient_id) == truth, patient_id


def test_ndjson_and_server_sources_give_identical_records(
    cohort_server, small_cohort, ground_truth
):
    ndjson = ReaderClinicalSource(NdjsonReader(small_cohort), pseudonym_key="site-key")
    server = server_source(cohort_server)
    for patient_id in ground_truth:
        assert ndjson.clinical_record(patient_id) == server.clinical_record(patient_id)


def test_paging_with_count_2_returns_everything(cohort_server, small_cohort, ground_truth):
    ndjson = NdjsonReader(small_cohort)
    reader = ServerReader(FhirClient(cohort_server.base_url, page_size=2))
    for truth in list(ground_truth.values())[:4]:  # every patient costs ~100 page requests
        patient = f"Patient/{truth.fhir_patient_id}"
        before = len(cohort_server.requests())
        paged = [r["id"] for r in reader.for_patient("MedicationAdministration", patient)]
        pages = [r for r in cohort_server.requests()[before:] if r["method"] == "GET"]
        expected = [r["id"] for r in ndjson.for_patient("MedicationAdministration", patient)]
        assert sorted(paged) == sorted(expected)  # all of them, none twice
        assert len(pages) == math.ceil(len(expected) / 2) - 1  # one `next` link per page
        start, end = (
            truth.treatment_start.replace(year=2000),
            truth.treatment_start.replace(year=2100),
        )
        paged = [r["id"] for r in reader.lab_observations(patient, start, end)]
        assert sorted(paged) == sorted(
            r["id"] for r in ndjson.lab_observations(patient, start, end)
        )
        assert sorted(r["id"] for r in reader.for_patient("Condition", patient)) == sorted(
            r["id"] for r in ndjson.for_patient("Condition", patient)
        )


def test_alternative_units_normalise_and_missing_labs_stay_missing(
    cohort_server, small_cohort, ground_truth
):
    observations = [
        json.loads(line) for line in (small_cohort / "fhir" / "Observation.ndjson").open()
    ]
    units = {o["valueQuantity"]["code"] for o in observations if "valueQuantity" in o}
    assert {"/uL", "10*3/uL", "g/L"} <= units  # the cohort does exercise alternative units
    source = server_source(cohort_server)
    by_id = {o["id"]: o for o in observations}
    alternative = missing = 0
    for patient_id, truth in ground_truth.items():
        record = source.clinical_record(patient_id)
        for timepoint, panel in truth.labs.items():
            got = record.panel(timepoint)
            for analyte in Analyte:
                if analyte not in panel.values:
                    missing += 1
                    assert got.get(analyte) is None
                    continue
                lab = got.values[analyte]
                assert lab.unit == CANONICAL_UNIT[analyte]
                assert lab.value == panel.values[analyte].value
                if by_id[lab.observation_id]["valueQuantity"]["code"] != CANONICAL_UNIT[analyte]:
                    alternative += 1
            assert got.nlr == panel.nlr
            assert got.sii == panel.sii
    assert alternative > 0
    assert missing > 0


def test_no_patient_identifier_in_the_logs(cohort_server, ground_truth, caplog):
    source = server_source(cohort_server, page_size=10)
    with caplog.at_level(logging.DEBUG):
        for patient_id in ground_truth:
            source.clinical_record(patient_id)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "clinical record of p-" in text
    assert "HTTP Request" in text  # httpx's own lines are there, redacted
    for patient_id, truth in ground_truth.items():
        assert patient_id.lower() not in text.lower()
        assert truth.fhir_patient_id not in text
    assert not re.search(r"syn\d+-\d{4}", text, re.IGNORECASE)
