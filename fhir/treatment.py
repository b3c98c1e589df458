"""Treatment start T0: the first PD-1/PD-L1 inhibitor the patient received.

Evidence is weighed in the order of how directly it records an administration:

1. MedicationAdministration (status not ``not-done`` / ``entered-in-error``):
   the earliest ``effective`` — this *is* T0 by the method's definition;
2. MedicationStatement (not ``entered-in-error`` / ``not-taken`` / ``intended``):
   the earliest ``effective`` start;
3. MedicationRequest (not ``cancelled`` / ``entered-in-error`` / ``draft``):
   the earliest dosage timing start or event, else ``authoredOn``;
4. a date given by configuration or an imported cohort file (the caller's fallback).

A medication is a PD-1/PD-L1 inhibitor when it is coded with an ATC code under
L01FF (or a pre-2022 ATC code of one of the agents), with the RxNorm
ingredient of pembrolizumab, nivolumab, atezolizumab, durvalumab, cemiplimab
or avelumab, or - failing codes - names one of them in its text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource

from icibenefit.fhir import codes

SOURCE_ORDER = ("MedicationAdministration", "MedicationStatement", "MedicationRequest")
_EXCLUDED_STATUS = {
    "MedicationAdministration": {"not-done", "entered-in-error"},
    "MedicationStatement": {"entered-in-error", "not-taken", "intended"},
    "MedicationRequest": {"cancelled", "entered-in-error", "draft"},
}
_UNKNOWN_AGENT = "PD-1/PD-L1 inhibitor"

MedicationResource = MedicationAdministration | MedicationStatement | MedicationRequest


@dataclass(frozen=True)
class TreatmentStart:
    """T0 with the agent and the kind of evidence it came from."""

    date: dt.date
    agent: str | None
    source: str


def agent_of(concept: CodeableConcept | None) -> str | None:
    """The PD-1/PD-L1 agent a medication concept names, ``None`` when it names none."""
    if concept is None:
        return None
    for coding in concept.coding or []:
        code = (coding.code or "").upper()
        if coding.system == codes.RXNORM and coding.code in codes.AGENT_BY_RXNORM:
            return codes.AGENT_BY_RXNORM[coding.code]
        if coding.system == codes.ATC and code in codes.AGENT_BY_ATC:
            return codes.AGENT_BY_ATC[code]
        if coding.system == codes.ATC and code.startswith(codes.ATC_PD1_PDL1_PREFIX):
            return _UNKNOWN_AGENT
    text = " ".join([concept.text or ""] + [c.display or "" for c in concept.coding or []]).lower()
    return next((agent for agent in codes.PD1_PDL1_AGENTS if agent in text), None)


def _medication_concept(
    resource: MedicationResource, medications: Mapping[str, Medication]
) -> CodeableConcept | None:
    if resource.medicationCodeableConcept is not None:
        return resource.medicationCodeableConcept
    reference: Reference | None = resource.medicationReference
    if reference is None or not reference.reference:
        return None
    key = reference.reference
    if key.startswith("#"):
        for contained in resource.contained or []:
            if isinstance(contained, Medication) and contained.id == key[1:]:
                return contained.code
        return None
    medication = medications.get(key) or medications.get(key.rsplit("/", 1)[-1])
    return None if medication is None else medication.code


def _start(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return None


def _date_of(resource: MedicationResource) -> dt.date | None:
    if isinstance(resource, MedicationRequest):
        for dosage in resource.dosageInstruction or []:
            timing = dosage.timing
            if timing is None:
                continue
            if timing.repeat is not None and timing.repeat.boundsPeriod is not None:
                start = _start(timing.repeat.boundsPeriod.start)
                if start is not None:
                    return start
            events = [d for d in map(_start, timing.event or []) if d is not None]
            if events:
                return min(events)
        return _start(resource.authoredOn)
    period = resource.effectivePeriod
    return _start(resource.effectiveDateTime or (period.start if period else None))


def find_treatment_start(
    resources: Iterable[Resource], medications: Mapping[str, Medication] | None = None
) -> TreatmentStart | None:
    """T0 from medication resources (see the module docstring), ``None`` without evidence.

    Parameters
    ----------
    resources
        The patient's MedicationAdministration / MedicationStatement / MedicationRequest
        (other resources are ignored).
    medications
        Medication resources referenced by them, keyed by ``Medication/<id>`` or id.
    """
    medications = medications or {}
    candidates: dict[str, list[tuple[dt.date, str]]] = {}
    for resource in resources:
        if not isinstance(
            resource, MedicationAdministration | MedicationStatement | MedicationRequest
        ):
            continue
        kind = resource.get_resource_type()
        if resource.status in _EXCLUDED_STATUS[kind]:
            continue
        agent = agent_of(_medication_concept(resource, medications))
        when = _date_of(resource)
        if agent is not None and when is not None:
            candidates.setdefault(kind, []).append((when, agent))
    for kind in SOURCE_ORDER:
        if kind in candidates:
            when, agent = min(candidates[kind])
            return TreatmentStart(when, None if agent == _UNKNOWN_AGENT else agent, kind)
    return None
