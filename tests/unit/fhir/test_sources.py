import datetime as dt
import logging

import pytest
from unit.fhir import fhir_samples as s

from icibenefit.errors import ConfigurationError, PatientResolutionError, TimelineError
from icibenefit.fhir import (
    ClinicalSource,
    NdjsonReader,
    ReaderClinicalSource,
    clinical_source_from_settings,
    load_treatment_starts,
)
from icibenefit.fhir.readers import ServerReader
from icibenefit.privacy import pseudonymize


def source(tmp_path, resources, **kwargs):
    s.write_ndjson(tmp_path, resources)
    return ReaderClinicalSource(NdjsonReader(tmp_path), pseudonym_key="key", **kwargs)


def test_ndjson_source_builds_the_record(tmp_path):
    src = source(tmp_path, s.sample_patient())
    assert isinstance(src, ClinicalSource)
    record = src.clinical_record("PID-0001")
    assert record.fhir_patient_id == "pat-a"
    assert record.treatment_start == s.T0
    assert record.treatment_agent == "pembrolizumab"
    assert record.birth_date == dt.date(1956, 7, 1)
    assert sorted(record.labs) == ["baseline", "cycle2"]


def test_unknown_patient_is_a_clear_error_without_the_identifier(tmp_path):
    src = source(tmp_path, s.sample_patient())
    with pytest.raises(PatientResolutionError, match="no FHIR Patient") as info:
        src.clinical_record("PID-9999")
    assert "PID-9999" not in str(info.value)
    assert pseudonymize("PID-9999", "key") in str(info.value)


def test_several_patients_are_an_error_unless_system_or_issuer_decides(tmp_path):
    resources = [
        *s.sample_patient("pat-a", "PID-1"),
        s.patient("pat-b", "PID-1", system="urn:oid:9.9.9"),
    ]
    with pytest.raises(PatientResolutionError, match="2 FHIR Patients"):
        source(tmp_path, resources).clinical_record("PID-1")
    by_system = source(tmp_path, resources, identifier_system="urn:oid:1.2.3.4")
    assert by_system.resolve_patient("PID-1")["id"] == "pat-a"
    assert (
        source(tmp_path, resources).resolve_patient("PID-1", issuer="urn:oid:9.9.9")["id"]
        == "pat-b"
    )
    assigned = [
        s.patient(
            "pat-c", "PID-2", identifier=[{"value": "PID-2", "assigner": {"display": "HOSP_A"}}]
        ),
        s.patient(
            "pat-d", "PID-2", identifier=[{"value": "PID-2", "assigner": {"display": "HOSP_B"}}]
        ),
    ]
    src = source(tmp_path / "x", assigned)
    assert src.resolve_patient("PID-2", issuer="HOSP_B")["id"] == "pat-d"


def test_treatment_start_from_file_when_the_ehr_has_none(tmp_path):
    resources = [r for r in s.sample_patient() if r["resourceType"] != "MedicationAdministration"]
    with pytest.raises(TimelineError, match="no treatment start"):
        source(tmp_path, resources).clinical_record("PID-0001")
    csv_file = tmp_path / "starts.csv"
    csv_file.write_text("patient_id,treatment_start,other\nPID-0001,2024-03-04,x\n")
    starts = load_treatment_starts(csv_file)
    assert starts == {"PID-0001": s.T0}
    record = source(tmp_path, resources, treatment_starts=starts).clinical_record("PID-0001")
    assert record.treatment_source == "file"
    assert record.treatment_agent is None
    assert record.panel("baseline").get("wbc") == 6.5


def test_bad_treatment_start_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,treatment_start\nP1,yesterday\n")
    with pytest.raises(ConfigurationError, match="line 2"):
        load_treatment_starts(bad)


def test_logs_carry_pseudonyms_only(tmp_path, caplog):
    src = source(tmp_path, s.sample_patient())
    with caplog.at_level(logging.DEBUG):
        src.clinical_record("PID-0001")
        with pytest.raises(PatientResolutionError):
            src.clinical_record("PID-0002")
    assert pseudonymize("PID-0001", "key") in caplog.text
    assert "PID-000" not in caplog.text
    assert "pat-a" not in caplog.text


def test_factory_chooses_the_source(make_settings, tmp_path):
    s.write_ndjson(tmp_path / "cohort", s.sample_patient())
    csv_file = tmp_path / "starts.csv"
    csv_file.write_text("patient_id,treatment_start\nPID-0001,2024-03-04\n")
    ndjson = clinical_source_from_settings(
        make_settings(fhir_ndjson_dir=tmp_path / "cohort", treatment_start_file=csv_file)
    )
    assert isinstance(ndjson.reader, NdjsonReader)
    assert ndjson.clinical_record("PID-0001").fhir_patient_id == "pat-a"
    server = clinical_source_from_settings(
        make_settings(
            fhir_base_url="http://127.0.0.1:1/fhir", fhir_patient_identifier_system="urn:x"
        )
    )
    assert isinstance(server.reader, ServerReader)
    assert server.identifier_system == "urn:x"
    with pytest.raises(ConfigurationError):
        clinical_source_from_settings(make_settings())


def test_ndjson_folder_without_files(tmp_path):
    with pytest.raises(ConfigurationError, match="no FHIR NDJSON"):
        NdjsonReader(tmp_path)
