"""FHIR R4 resources of one patient, validated with fhir.resources before writing.

fhir.resources 8 defaults to R5; its ``R4B`` package is used for validation
because R4B differs from R4 only in resources we do not emit, whereas R5
changed MedicationAdministration (``occurence[x]``, ``CodeableReference``).
The code tables below are public so that a consumer (the FHIR client, tests)
can map codes back to the record's vocabulary.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.resource import Resource

from icibenefit.domain import (
    LOINC_BMI,
    LOINC_BY_ANALYTE,
    LOINC_PDL1,
    LOINC_SMOKING_STATUS,
    LOINC_SYSTEM,
    Analyte,
)
from icibenefit.synth.clinical import HOSPITAL_TZ, ClinicalDraw, ReportedLab

#: Default Patient.identifier system carrying the DICOM PatientID.
DEFAULT_IDENTIFIER_SYSTEM = "urn:icibenefit:synthetic:mrn"

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

#: agent -> (RxNorm ingredient, ATC, dose mg)
AGENT_CODES: dict[str, tuple[str, str, int]] = {
    "pembrolizumab": ("1547545", "L01FF02", 200),
    "nivolumab": ("1597876", "L01FF01", 360),
    "atezolizumab": ("1792776", "L01FF05", 1200),
    "durvalumab": ("1919503", "L01FF03", 1500),
}
#: record histology -> (SNOMED CT disorder, display)
HISTOLOGY_CODES: dict[str, tuple[str, str]] = {
    "adenocarcinoma": ("254626006", "Adenocarcinoma of lung"),
    "squamous": ("254634000", "Squamous cell carcinoma of lung"),
    "other": ("254637007", "Non-small cell lung cancer"),
}
#: record metastasis site -> (SNOMED CT disorder, display)
METASTASIS_CODES: dict[str, tuple[str, str]] = {
    "liver": ("94381002", "Secondary malignant neoplasm of liver"),
    "brain": ("94225005", "Secondary malignant neoplasm of brain"),
    "bone": ("94222008", "Secondary malignant neoplasm of bone"),
    "adrenal": ("94148006", "Secondary malignant neoplasm of adrenal gland"),
}
#: PriorProcedure.kind -> (SNOMED CT procedure, display).  The lung resections are
#: the ones a hospital most often records; the appendectomy is a non-thoracic
#: distractor.
PROCEDURE_CODES: dict[str, tuple[str, str]] = {
    "lobectomy": ("173171007", "Lobectomy of lung"),
    "segmentectomy": ("173172000", "Excision of segment of lung"),
    "pneumonectomy": ("49795001", "Total pneumonectomy"),
    "appendectomy": ("80146002", "Appendectomy"),
}
SURGICAL_PROCEDURE = ("387713003", "Surgical procedure")
LUNG_STRUCTURE = ("39607008", "Lung structure")
#: record smoking status -> (SNOMED CT finding, display)
SMOKING_CODES: dict[str, tuple[str, str]] = {
    "never": ("266919005", "Never smoked tobacco"),
    "former": ("8517006", "Ex-smoker"),
    "current": ("77176002", "Smoker"),
}
_ANALYTE_DISPLAY: dict[Analyte, str] = {
    Analyte.WBC: "Leukocytes [#/volume] in Blood",
    Analyte.NEUTROPHILS: "Neutrophils [#/volume] in Blood",
    Analyte.LYMPHOCYTES: "Lymphocytes [#/volume] in Blood",
    Analyte.MONOCYTES: "Monocytes [#/volume] in Blood",
    Analyte.PLATELETS: "Platelets [#/volume] in Blood",
    Analyte.HEMOGLOBIN: "Hemoglobin [Mass/volume] in Blood",
    Analyte.ALBUMIN: "Albumin [Mass/volume] in Serum or Plasma",
    Analyte.LDH: "Lactate dehydrogenase [Enzymatic activity/volume] in Serum or Plasma",
}


def patient_resources(
    draw: ClinicalDraw, display_name: str, identifier_system: str
) -> dict[str, list[dict[str, Any]]]:
    """All resources of one patient, by resource type, as validated JSON-ready dicts."""
    record = draw.record
    pid = record.fhir_patient_id
    assert pid is not None  # set by draw_clinical
    subject = {"reference": f"Patient/{pid}"}
    patient = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": identifier_system, "value": record.patient_id}],
        "name": [{"family": "Synthetic", "given": [display_name]}],
        "gender": record.sex,
        "birthDate": record.birth_date.isoformat() if record.birth_date else None,
    }
    observations = [_lab(lab, subject) for lab in draw.labs]
    baseline_dt = dt.datetime.combine(
        record.treatment_start - dt.timedelta(days=3), dt.time(10, 0), HOSPITAL_TZ
    )
    if record.smoking_status is not None:
        code, display = SMOKING_CODES[record.smoking_status]
        observations.append(
            _observation(
                f"{pid}-smoking",
                "social-history",
                LOINC_SMOKING_STATUS,
                "Tobacco smoking status",
                subject,
                baseline_dt,
                {"valueCodeableConcept": {"coding": [_coding(SNOMED, code, display)]}},
            )
        )
    if record.bmi is not None:
        observations.append(
            _observation(
                f"{pid}-bmi",
                "vital-signs",
                LOINC_BMI,
                "Body mass index (BMI) [Ratio]",
                subject,
                baseline_dt,
                {"valueQuantity": _quantity(record.bmi, "kg/m2")},
            )
        )
    if record.pdl1_tps is not None:
        when = dt.datetime.combine(draw.pdl1_date, dt.time(14, 0), HOSPITAL_TZ)
        observations.append(
            _observation(
                f"{pid}-pdl1",
                "laboratory",
                LOINC_PDL1[0],  # the first of the PD-L1 TPS codes the client reads
                "PD-L1 tumor proportion score",
                subject,
                when,
                {"valueQuantity": _quantity(int(record.pdl1_tps), "%")},
            )
        )
    return {
        "Patient": [_validated(Patient, patient)],
        "Observation": [_validated(Observation, o) for o in observations],
        "MedicationAdministration": [
            _validated(MedicationAdministration, m) for m in _administrations(draw, subject)
        ],
        "Condition": [_validated(Condition, c) for c in _conditions(draw, subject)],
        "Procedure": [_validated(Procedure, p) for p in _procedures(draw, subject)],
    }


def _lab(lab: ReportedLab, subject: dict[str, str]) -> dict[str, Any]:
    return _observation(
        lab.observation_id,
        "laboratory",
        LOINC_BY_ANALYTE[lab.analyte],
        _ANALYTE_DISPLAY[lab.analyte],
        subject,
        lab.effective,
        {"valueQuantity": _quantity(lab.value, lab.unit)},
    )


def _observation(
    oid: str,
    category: str,
    loinc: str,
    display: str,
    subject: dict[str, str],
    when: dt.datetime,
    value: dict[str, Any],
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}],
        "code": {
            "coding": [{"system": LOINC_SYSTEM, "code": loinc, "display": display}],
            "text": display,
        },
        "subject": subject,
        "effectiveDateTime": when.isoformat(),
        **value,
    }


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _quantity(value: float | int, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _administrations(draw: ClinicalDraw, subject: dict[str, str]) -> list[dict[str, Any]]:
    record = draw.record
    agent = record.treatment_agent or "pembrolizumab"
    rxnorm, atc, dose = AGENT_CODES[agent]
    medication = {
        "coding": [
            {"system": RXNORM, "code": rxnorm, "display": agent},
            {"system": ATC, "code": atc, "display": agent},
        ],
        "text": agent,
    }
    return [
        {
            "resourceType": "MedicationAdministration",
            "id": f"{record.fhir_patient_id}-cycle{n}",
            "status": "completed",
            "medicationCodeableConcept": medication,
            "subject": subject,
            "effectiveDateTime": dt.datetime.combine(day, dt.time(10, 30), HOSPITAL_TZ).isoformat(),
            "dosage": {
                "route": {
                    "coding": [
                        {"system": SNOMED, "code": "47625008", "display": "Intravenous route"}
                    ]
                },
                "dose": _quantity(dose, "mg"),
            },
        }
        for n, day in enumerate(draw.cycle_dates, start=1)
    ]


def _conditions(draw: ClinicalDraw, subject: dict[str, str]) -> list[dict[str, Any]]:
    record = draw.record
    entries: list[tuple[str, tuple[str, str]]] = []
    if record.histology is not None:
        entries.append(("histology", HISTOLOGY_CODES[record.histology]))
    entries += [(f"metastasis-{site}", METASTASIS_CODES[site]) for site in record.metastasis_sites]
    return [
        {
            "resourceType": "Condition",
            "id": f"{record.fhir_patient_id}-{suffix}",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": "confirmed",
                    }
                ]
            },
            "code": {
                "coding": [{"system": SNOMED, "code": code, "display": display}],
                "text": display,
            },
            "subject": subject,
            "onsetDateTime": draw.diagnosis_date.isoformat(),
        }
        for suffix, (code, display) in entries
    ]


def _procedures(draw: ClinicalDraw, subject: dict[str, str]) -> list[dict[str, Any]]:
    resources = []
    for procedure in draw.procedures:
        code, display = PROCEDURE_CODES[procedure.kind]
        resource: dict[str, Any] = {
            "resourceType": "Procedure",
            "id": procedure.procedure_id,
            "status": "completed",
            "category": {"coding": [_coding(SNOMED, *SURGICAL_PROCEDURE)]},
            "code": {"coding": [_coding(SNOMED, code, display)], "text": display},
            "subject": subject,
            "performedDateTime": procedure.performed.isoformat(),
        }
        if procedure.thoracic:
            resource["bodySite"] = [{"coding": [_coding(SNOMED, *LUNG_STRUCTURE)]}]
        resources.append(resource)
    return resources


def _validated(model: type[Resource], data: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through fhir.resources so only valid R4 leaves this module."""
    validated = model.model_validate({k: v for k, v in data.items() if v is not None})
    result: dict[str, Any] = validated.model_dump(mode="json", exclude_none=True, by_alias=True)
    return result
