"""Hand-made FHIR R4 resources for the fhir tests (unit and integration)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
TZ = dt.timezone(dt.timedelta(hours=1))
T0 = dt.date(2024, 3, 4)

# analyte LOINC codes
WBC, NEUT, LYMPH, MONO, PLT, HGB, ALB, LDH = (
    "6690-2",
    "751-8",
    "731-0",
    "742-7",
    "777-3",
    "718-7",
    "1751-7",
    "2532-0",
)
NEUT_PCT, LYMPH_PCT = "770-8", "736-9"


def patient(
    fhir_id: str, patient_id: str, system: str = "urn:oid:1.2.3.4", **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": fhir_id,
        "identifier": [{"system": system, "value": patient_id}],
        "gender": "female",
        "birthDate": "1956-07-01",
        **extra,
    }


def observation(
    obs_id: str,
    fhir_id: str,
    loinc: str,
    value: float,
    unit: str,
    when: dt.datetime,
    status: str = "final",
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": f"Patient/{fhir_id}"},
        "effectiveDateTime": when.isoformat(),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def administration(
    ma_id: str, fhir_id: str, when: dt.datetime, coding: dict[str, str], status: str = "completed"
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": ma_id,
        "status": status,
        "medicationCodeableConcept": {"coding": [coding]},
        "subject": {"reference": f"Patient/{fhir_id}"},
        "effectiveDateTime": when.isoformat(),
    }


SNOMED = "http://snomed.info/sct"
LOBECTOMY = {"system": SNOMED, "code": "173171007", "display": "Lobectomy of lung"}
APPENDECTOMY = {"system": SNOMED, "code": "80146002", "display": "Appendectomy"}


def procedure(
    proc_id: str,
    fhir_id: str,
    performed: dt.datetime | str | None,
    coding: dict[str, str] | None = None,
    status: str = "completed",
    text: str | None = None,
) -> dict[str, Any]:
    """A Procedure performed at ``performed`` (a datetime, a partial date string, or undated)."""
    code: dict[str, Any] = {"coding": [coding]} if coding else {}
    if text:
        code["text"] = text
    resource: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": proc_id,
        "status": status,
        "code": code,
        "subject": {"reference": f"Patient/{fhir_id}"},
    }
    if performed is not None:
        resource["performedDateTime"] = (
            performed if isinstance(performed, str) else performed.isoformat()
        )
    return resource


def at(day: int, hour: int = 8) -> dt.datetime:
    """A draw ``day`` days from T0 at ``hour`` o'clock, hospital time."""
    return dt.datetime.combine(T0 + dt.timedelta(days=day), dt.time(hour), TZ)


PEMBROLIZUMAB_RXNORM = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1547545"}


def sample_patient(fhir_id: str = "pat-a", patient_id: str = "PID-0001") -> list[dict[str, Any]]:
    """One patient with labs in odd units, a distractor, missing values and T0 evidence."""
    p = fhir_id
    return [
        patient(p, patient_id),
        administration(f"{p}-ma1", p, at(0, 10), PEMBROLIZUMAB_RXNORM),
        administration(f"{p}-ma2", p, at(21, 10), PEMBROLIZUMAB_RXNORM),
        # an older administration that was not given does not count
        administration(f"{p}-ma0", p, at(-14, 10), PEMBROLIZUMAB_RXNORM, status="not-done"),
        # baseline: two draws, the later (day -3) wins; the day -40 distractor is ignored
        observation(f"{p}-b0-wbc", p, WBC, 9.9, "10*9/L", at(-40)),
        observation(f"{p}-b1-wbc", p, WBC, 7.0, "10*9/L", at(-10)),
        observation(f"{p}-b2-wbc", p, WBC, 6500, "/uL", at(-3)),
        observation(f"{p}-b2-neut", p, NEUT, 4.25, "10*3/uL", at(-3)),
        observation(f"{p}-b2-lymph", p, LYMPH, 1.3, "10*9/L", at(-3)),
        observation(f"{p}-b2-plt", p, PLT, 245, "10*3/uL", at(-3)),
        observation(f"{p}-b2-hgb", p, HGB, 7.8, "mmol/L", at(-3)),
        observation(f"{p}-b2-alb", p, ALB, 38, "g/L", at(-3)),
        observation(f"{p}-b2-ldh", p, LDH, 3.5, "ukat/L", at(-3)),
        # cycle 2: percent differentials with the WBC of the same draw; no platelets
        observation(f"{p}-c2-wbc", p, WBC, 8.0, "10*9/L", at(22)),
        observation(f"{p}-c2-neut", p, NEUT_PCT, 70, "%", at(22)),
        observation(f"{p}-c2-lymph", p, LYMPH_PCT, 20, "%", at(22)),
        observation(f"{p}-c2-hgb", p, HGB, 121, "g/L", at(22)),
        # entered in error: ignored
        observation(f"{p}-c2-plt", p, PLT, 999, "10*9/L", at(22), status="entered-in-error"),
        # no cycle 3 draw at all
    ]


def write_ndjson(folder: Path, resources: list[dict[str, Any]]) -> Path:
    """Write resources as ``folder/fhir/<Type>.ndjson`` (the cohort layout)."""
    target = folder / "fhir"
    target.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[str]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for resource_type, lines in by_type.items():
        (target / f"{resource_type}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
