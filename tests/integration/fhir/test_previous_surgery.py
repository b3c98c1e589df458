"""Previous surgery through the real FHIR server: the cohort's Procedures decide it."""

import datetime as dt
import logging

import pytest

from icibenefit.fhir import FhirClient, ReaderClinicalSource, ServerReader
from icibenefit.privacy import pseudonymize

pytestmark = pytest.mark.integration


def _client(server):
    return FhirClient(server.base_url, backoff_seconds=0.05, max_retries=3)


def _one_with(ground_truth, flag):
    return next(r for r in ground_truth.values() if r.previous_surgery is flag)


def test_a_patient_with_a_lung_resection_has_previous_surgery(cohort_server, ground_truth, caplog):
    operated, other = _one_with(ground_truth, True), _one_with(ground_truth, False)
    reader = ServerReader(_client(cohort_server))
    fetched = reader.procedures(f"Patient/{operated.fhir_patient_id}", operated.treatment_start)
    assert fetched  # the fixture loaded the cohort's Procedure resources
    assert {p["resourceType"] for p in fetched} == {"Procedure"}
    source = ReaderClinicalSource(reader, pseudonym_key="site-key")
    with caplog.at_level(logging.INFO, logger="icibenefit.fhir"):
        assert source.clinical_record(operated.patient_id).previous_surgery is True
        assert source.clinical_record(other.patient_id).previous_surgery is False
    assert "previous surgery True" in caplog.text
    assert pseudonymize(operated.patient_id, "site-key") in caplog.text
    assert operated.patient_id not in caplog.text
    assert str(operated.fhir_patient_id) not in caplog.text


def test_the_date_search_leaves_out_procedures_after_its_end(cohort_server, ground_truth):
    operated = _one_with(ground_truth, True)
    reader = ServerReader(_client(cohort_server))
    patient = f"Patient/{operated.fhir_patient_id}"
    assert reader.procedures(patient, operated.treatment_start)
    assert reader.procedures(patient, dt.date(1900, 1, 1)) == []


def test_procedure_search_outage_is_retried_and_a_refusal_leaves_it_unknown(
    cohort_server, ground_truth
):
    operated = _one_with(ground_truth, True)
    reader = ServerReader(_client(cohort_server))
    patient = f"Patient/{operated.fhir_patient_id}"
    cohort_server.inject_faults(503, 2, retry_after=0)
    assert reader.procedures(patient, operated.treatment_start)
    cohort_server.inject_faults(403, 1)
    assert reader.procedures(patient, operated.treatment_start) is None
