"""The clinical timeline: FHIR resources in, a pure :class:`ClinicalRecord` out.

No I/O here: the sources (:mod:`icibenefit.fhir.sources`) fetch resources from
a server or a folder of NDJSON and hand them over as JSON dicts, which are
parsed with fhir.resources' R4B models (R4B keeps R4's shape of
MedicationAdministration & co., unlike the library's default R5).

Lab timepoints (METHOD.md, "Clinical timepoints"), in days from T0 counted on
the calendar date of the draw as the laboratory recorded it:

* **baseline**: days -30..0, the draw closest to T0 (a pre-dose draw on the
  day of T0 counts);
* **cycle 2**: days 14..28, the draw closest to day 21 (cycle 2 of a q3w
  schedule starts on day 21; +-7 days covers rescheduled cycles and q2w agents
  without reaching the next cycle's window);
* **cycle 3**: days 35..49, the draw closest to day 42.

Each analyte is chosen independently (the closest draw that measured it; on
a tie the later draw), so a panel may combine draws when a lab split them.
An analyte measured in no draw of a window stays absent: imputation is the
model's job.  The synthetic generator draws baseline on days -21..-1 and the
cycles on days 21+-3 and 42+-3, inside these windows, and a distractor panel on
days -55..-40, outside them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypeVar

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from icibenefit.domain import (
    CANONICAL_UNIT,
    Analyte,
    ClinicalRecord,
    LabPanel,
    LabTimepoint,
    LabValue,
)
from icibenefit.fhir import codes
from icibenefit.fhir.concepts import coded, concept_text
from icibenefit.fhir.surgery import previous_surgery
from icibenefit.fhir.treatment import TreatmentStart
from icibenefit.fhir.units import (
    DIFFERENTIAL_ANALYTES,
    UnitError,
    is_percent,
    percent_to_count,
    to_canonical,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)

#: Observation statuses whose value is a result (FHIR R4 "available" results).
RESULT_STATUSES = frozenset({"final", "amended", "corrected"})


@dataclass(frozen=True)
class LabWindow:
    """Days from T0 (inclusive) of one lab timepoint and the day it aims at."""

    timepoint: LabTimepoint
    first_day: int
    last_day: int
    target_day: int


LAB_WINDOWS: tuple[LabWindow, ...] = (
    LabWindow(LabTimepoint.BASELINE, -30, 0, 0),
    LabWindow(LabTimepoint.CYCLE2, 14, 28, 21),
    LabWindow(LabTimepoint.CYCLE3, 35, 49, 42),
)
#: Days from T0 a source must fetch labs for (every window, one day of slack for time zones).
LAB_FETCH_DAYS = (
    min(w.first_day for w in LAB_WINDOWS) - 1,
    max(w.last_day for w in LAB_WINDOWS) + 1,
)


def parse(resources: Iterable[Mapping[str, Any]], model: type[R]) -> list[R]:
    """Validate the resources of one type with fhir.resources; skip (and count) invalid ones.

    Ids are not logged: synthetic and some real ids embed the patient identifier.
    """
    parsed, invalid = [], 0
    name = model.get_resource_type()
    for resource in resources:
        if resource.get("resourceType") != name:
            continue
        try:
            parsed.append(model.model_validate(resource))
        except ValidationError:
            invalid += 1
    if invalid:
        log.warning("skipped %d invalid %s resources", invalid, name)
    return parsed


# ---------------------------------------------------------------------- labs


def effective_datetime(observation: Observation) -> dt.datetime | None:
    """When the sample was taken; a bare date becomes midnight UTC."""
    value: Any = observation.effectiveDateTime or observation.effectiveInstant
    if value is None and observation.effectivePeriod is not None:
        value = observation.effectivePeriod.start
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(0), dt.UTC)
    return None  # absent or a partial date (year or month only): unusable for a window


@dataclass(frozen=True)
class _Reported:
    analyte: Analyte
    value: Decimal
    unit: str
    effective: dt.datetime
    observation_id: str


def _reported_lab(observation: Observation) -> _Reported | None:
    loinc = coded(observation.code, codes.LOINC)
    analytes = {codes.ANALYTE_BY_LOINC[c] for c in loinc if c in codes.ANALYTE_BY_LOINC}
    quantity = observation.valueQuantity
    effective = effective_datetime(observation)
    if (
        len(analytes) != 1
        or observation.status not in RESULT_STATUSES
        or quantity is None
        or quantity.value is None
        or effective is None
        or observation.id is None
    ):
        return None
    unit = quantity.code if quantity.system == codes.UCUM and quantity.code else quantity.unit
    if unit is None:
        return None
    return _Reported(analytes.pop(), Decimal(quantity.value), unit, effective, observation.id)


def lab_values(observations: Sequence[Observation]) -> list[LabValue]:
    """Every usable lab result in its canonical unit.

    Percent differentials are converted with the WBC of the same draw (same
    effective time); an absolute count of the same draw wins over a percentage.
    Results in an unknown unit are dropped (and counted in the log).
    """
    reported = [lab for lab in map(_reported_lab, observations) if lab is not None]
    wbc_by_draw: dict[dt.datetime, float] = {}
    absolute: dict[tuple[Analyte, dt.datetime], LabValue] = {}
    percent: list[_Reported] = []
    dropped = 0
    for lab in reported:
        if is_percent(lab.unit):
            percent.append(lab)
            continue
        try:
            value = to_canonical(lab.analyte, lab.value, lab.unit)
        except UnitError:
            dropped += 1
            continue
        absolute[(lab.analyte, lab.effective)] = LabValue(
            analyte=lab.analyte,
            value=value,
            unit=CANONICAL_UNIT[lab.analyte],
            effective=lab.effective,
            observation_id=lab.observation_id,
        )
        if lab.analyte is Analyte.WBC:
            wbc_by_draw[lab.effective] = value
    for lab in percent:
        wbc = wbc_by_draw.get(lab.effective)
        if lab.analyte not in DIFFERENTIAL_ANALYTES or wbc is None:
            dropped += 1
            continue
        absolute.setdefault(
            (lab.analyte, lab.effective),
            LabValue(
                analyte=lab.analyte,
                value=percent_to_count(lab.value, wbc),
                unit=CANONICAL_UNIT[lab.analyte],
                effective=lab.effective,
                observation_id=lab.observation_id,
            ),
        )
    if dropped:
        log.warning("dropped %d lab results with an unconvertible unit or no WBC", dropped)
    return list(absolute.values())


def lab_panels(values: Iterable[LabValue], t0: dt.date) -> dict[LabTimepoint, LabPanel]:
    """Assign lab values to the timepoint windows (see the module docstring)."""
    chosen: dict[LabTimepoint, dict[Analyte, LabValue]] = {}
    for window in LAB_WINDOWS:
        best: dict[Analyte, LabValue] = {}
        for lab in values:
            day = (lab.effective.date() - t0).days
            if not window.first_day <= day <= window.last_day:
                continue
            current = best.get(lab.analyte)
            if current is None or _closer(lab, current, t0, window.target_day):
                best[lab.analyte] = lab
        if best:
            chosen[window.timepoint] = best
    return {tp: LabPanel(timepoint=tp, values=dict(sorted(v.items()))) for tp, v in chosen.items()}


def _closer(lab: LabValue, other: LabValue, t0: dt.date, target_day: int) -> bool:
    def distance(value: LabValue) -> int:
        return abs((value.effective.date() - t0).days - target_day)

    return (distance(lab), other.effective) < (distance(other), lab.effective)


# ---------------------------------------------------------------------- history


def _latest_near(observations: Iterable[Observation], t0: dt.date) -> list[Observation]:
    """Observations ordered by preference: latest on or before T0 first, then earliest after."""
    dated = [(d, o) for o in observations if (d := effective_datetime(o)) is not None]
    dated.sort(key=lambda pair: pair[0])
    before = [o for d, o in reversed(dated) if d.date() <= t0]
    return before + [o for d, o in dated if d.date() > t0]


def _smoking(observation: Observation) -> str | None:
    for code in coded(observation.valueCodeableConcept, codes.SNOMED):
        if code in codes.SMOKING_BY_SNOMED:
            return codes.SMOKING_BY_SNOMED[code]
    text = concept_text(observation.valueCodeableConcept)
    for word, category in (("never", "never"), ("former", "former"), ("ex-", "former")):
        if word in text:
            return category
    return "current" if "current" in text else None


def _pdl1(observation: Observation) -> float | None:
    if observation.valueQuantity is not None and observation.valueQuantity.value is not None:
        return float(observation.valueQuantity.value)
    if observation.valueInteger is not None:
        return float(observation.valueInteger)
    if observation.valueString:
        match = re.search(r"(\d+(?:\.\d+)?)\s*%", observation.valueString)
        return float(match.group(1)) if match else None
    return None


def _is_pdl1(observation: Observation) -> bool:
    if set(coded(observation.code, codes.LOINC)) & set(codes.LOINC_PDL1):
        return True
    text = concept_text(observation.code)
    return any(marker in text for marker in codes.PDL1_TEXT)


def history(observations: Sequence[Observation], t0: dt.date) -> dict[str, Any]:
    """Smoking status, BMI and PD-L1 TPS: the value nearest T0, preferring earlier ones."""
    results = [o for o in observations if o.status in RESULT_STATUSES]
    found: dict[str, Any] = {}
    for observation in _latest_near(results, t0):
        loincs = set(coded(observation.code, codes.LOINC))
        if codes.LOINC_SMOKING_STATUS in loincs and "smoking_status" not in found:
            status = _smoking(observation)
            if status is not None:
                found["smoking_status"] = status
        elif codes.LOINC_BMI in loincs and "bmi" not in found:
            quantity = observation.valueQuantity
            if quantity is not None and quantity.value is not None:
                found["bmi"] = float(quantity.value)
        elif _is_pdl1(observation) and "pdl1_tps" not in found:
            value = _pdl1(observation)
            if value is not None:
                found["pdl1_tps"] = value
    return found


def diagnoses(conditions: Sequence[Condition]) -> dict[str, Any]:
    """Histology and metastasis sites from the Conditions.

    Histology is the specific one recorded (adenocarcinoma or squamous);
    "other" when only an unspecified NSCLC, or both, are recorded.  Refuted and
    entered-in-error Conditions are ignored.
    """
    histologies: set[str] = set()
    sites: set[str] = set()
    for condition in conditions:
        status = coded(condition.verificationStatus, codes.CONDITION_VERIFICATION)
        if set(status) & {"refuted", "entered-in-error"}:
            continue
        snomed = coded(condition.code, codes.SNOMED)
        text = concept_text(condition.code)
        site_codes = [
            codes.METASTASIS_SITE_BY_SNOMED[c]
            for c in snomed
            if c in codes.METASTASIS_SITE_BY_SNOMED
        ]
        if site_codes:
            sites.update(site_codes)
            continue
        if any(marker in text for marker in codes.METASTASIS_TEXT):
            known = set(codes.METASTASIS_SITE_BY_SNOMED.values())
            sites.update(site for site in known if site in text)
            continue
        histologies.update(
            codes.HISTOLOGY_BY_SNOMED[c] for c in snomed if c in codes.HISTOLOGY_BY_SNOMED
        )
        histologies.update(h for word, h in codes.HISTOLOGY_TEXT if word in text)
    specific = sorted(histologies - {"other"})
    histology = specific[0] if len(specific) == 1 else ("other" if histologies else None)
    return {"histology": histology, "metastasis_sites": tuple(sorted(sites))}


# ---------------------------------------------------------------------- the record

_SEX: dict[str, Literal["male", "female", "other", "unknown"]] = {
    "male": "male",
    "female": "female",
    "other": "other",
}


def build_clinical_record(
    patient_id: str,
    patient: Mapping[str, Any],
    treatment: TreatmentStart,
    observations: Iterable[Mapping[str, Any]],
    conditions: Iterable[Mapping[str, Any]],
    procedures: Iterable[Mapping[str, Any]] | None = None,
) -> ClinicalRecord:
    """Assemble the record from one patient's resources (JSON dicts).

    Parameters
    ----------
    patient_id
        The DICOM PatientID the record is for (kept as given).
    patient
        The FHIR Patient resource.
    treatment
        T0, the agent and where T0 came from.
    observations
        The patient's Observations; labs outside the windows are ignored here,
        so a source may pass more than it needs.
    conditions
        The patient's Conditions.
    procedures
        The patient's Procedures (any date; see :mod:`icibenefit.fhir.surgery`),
        or ``None`` when they could not be looked up: previous surgery is then unknown.
    """
    (patient_model,) = parse([patient], Patient)
    observation_models = parse(observations, Observation)
    labs = lab_panels(lab_values(observation_models), treatment.date)
    birth = patient_model.birthDate
    sex = _SEX.get(patient_model.gender or "", "unknown")
    return ClinicalRecord(
        patient_id=patient_id,
        fhir_patient_id=patient_model.id,
        sex=sex,
        birth_date=birth if isinstance(birth, dt.date) else None,
        treatment_start=treatment.date,
        treatment_agent=treatment.agent,
        treatment_source=treatment.source,
        previous_surgery=(
            None
            if procedures is None
            else previous_surgery(parse(procedures, Procedure), treatment.date)
        ),
        labs=dict(sorted(labs.items())),
        **history(observation_models, treatment.date),
        **diagnoses(parse(conditions, Condition)),
    )
