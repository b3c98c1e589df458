"""The FHIR NDJSON parses with fhir.resources and encodes the ground-truth record exactly."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pydicom
from fhir.resources.R4B import get_fhir_model_class

from icibenefit.domain import LOINC_BY_ANALYTE, Analyte
from icibenefit.synth import load_manifest
from icibenefit.synth.fhir_resources import DEFAULT_IDENTIFIER_SYSTEM

#: UCUM unit -> factor such that canonical = value / factor (an independent table on purpose).
TO_CANONICAL = {"10*9/L": 1, "10*3/uL": 1, "/uL": 1000, "g/dL": 1, "g/L": 10, "U/L": 1}
ANALYTE_BY_LOINC = {code: analyte for analyte, code in LOINC_BY_ANALYTE.items()}


def _read(cohort: Path, name: str) -> list[dict[str, Any]]:
    lines = (cohort / "fhir" / f"{name}.ndjson").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_every_line_is_a_valid_r4_resource(small_cohort: Path) -> None:
    counts: Counter[str] = Counter()
    for name in ("Patient", "Observation", "MedicationAdministration", "Condition"):
        for data in _read(small_cohort, name):
            assert data["resourceType"] == name
            get_fhir_model_class(name).model_validate(data)
            counts[name] += 1
    assert counts["Patient"] == 12
    assert counts["Observation"] > 12 * 15
    assert counts["MedicationAdministration"] >= 12 * 3


def test_patient_identifier_is_the_dicom_patient_id(small_cohort: Path) -> None:
    manifest = load_manifest(small_cohort)
    patients = {p["id"]: p for p in _read(small_cohort, "Patient")}
    for entry in manifest.patients:
        resource = patients[entry.clinical_record.fhir_patient_id or ""]
        assert resource["identifier"] == [
            {"system": DEFAULT_IDENTIFIER_SYSTEM, "value": entry.patient_id}
        ]
        ct = next((small_cohort / entry.timepoints[0].ct_dir).glob("*.dcm"))
        assert pydicom.dcmread(ct, stop_before_pixels=True).PatientID == entry.patient_id


def test_lab_observations_decode_exactly_to_the_record(small_cohort: Path) -> None:
    observations = {o["id"]: o for o in _read(small_cohort, "Observation")}
    units: Counter[str] = Counter()
    for entry in load_manifest(small_cohort).patients:
        record = entry.clinical_record
        for panel in record.labs.values():
            for analyte, lab in panel.values.items():
                obs = observations[lab.observation_id]
                assert obs["subject"]["reference"] == f"Patient/{record.fhir_patient_id}"
                assert ANALYTE_BY_LOINC[obs["code"]["coding"][0]["code"]] == analyte
                quantity = obs["valueQuantity"]
                assert quantity["system"] == "http://unitsofmeasure.org"
                units[quantity["code"]] += 1
                assert quantity["value"] / TO_CANONICAL[quantity["code"]] == lab.value
                assert dt.datetime.fromisoformat(obs["effectiveDateTime"]) == lab.effective
                assert lab.effective.utcoffset() is not None
                days = (lab.effective.date() - record.treatment_start).days
                window = {"baseline": (-30, -1), "cycle2": (17, 25), "cycle3": (38, 46)}[
                    panel.timepoint
                ]
                assert window[0] <= days <= window[1]
    # Alternative units occur, so a client must normalise them.
    assert units["10*9/L"] > 0
    assert units["10*3/uL"] + units["/uL"] > 0


def test_treatment_start_is_the_first_administration(small_cohort: Path) -> None:
    administrations = _read(small_cohort, "MedicationAdministration")
    for entry in load_manifest(small_cohort).patients:
        mine = [
            a
            for a in administrations
            if a["subject"]["reference"] == f"Patient/{entry.clinical_record.fhir_patient_id}"
        ]
        first = min(dt.datetime.fromisoformat(a["effectiveDateTime"]) for a in mine)
        assert first.date() == entry.treatment_start == entry.clinical_record.treatment_start
        codes = {c["system"]: c["code"] for c in mine[0]["medicationCodeableConcept"]["coding"]}
        assert codes["http://www.whocc.no/atc"].startswith("L01FF")


def test_analyte_coverage(small_cohort: Path) -> None:
    seen = {
        analyte
        for entry in load_manifest(small_cohort).patients
        for panel in entry.clinical_record.labs.values()
        for analyte in panel.values
    }
    assert {Analyte.NEUTROPHILS, Analyte.LYMPHOCYTES, Analyte.PLATELETS, Analyte.HEMOGLOBIN} <= seen
