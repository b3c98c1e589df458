"""Clinical truth of one patient: demographics, history, hemogram, treatment cycles.

The result is both the ground-truth :class:`~icibenefit.domain.ClinicalRecord`
(canonical units) and the list of lab results *as the laboratory reported
them* (possibly in an alternative unit), from which the FHIR resources are
written.  Canonical values are rounded so that every alternative value is an
exact decimal multiple of it (x1 or x1000 for counts, x10 for g/L): a client
that converts back with UCUM and rounds to the canonical precision
(:data:`CANONICAL_DECIMALS`) reproduces the record exactly.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from icibenefit.domain import (
    CANONICAL_UNIT,
    Analyte,
    ClinicalRecord,
    LabPanel,
    LabTimepoint,
    LabValue,
)
from icibenefit.synth.outcomes import MONTH_DAYS, ResponseCourse

#: Clock of the (synthetic) hospital: a fixed offset, so datetimes carry a zone
#: but never depend on daylight-saving rules.
HOSPITAL_TZ = dt.timezone(dt.timedelta(hours=1))

#: Decimals of each analyte's canonical value (10*9/L, g/dL, U/L).
CANONICAL_DECIMALS: dict[Analyte, int] = {
    Analyte.WBC: 2,
    Analyte.NEUTROPHILS: 2,
    Analyte.LYMPHOCYTES: 2,
    Analyte.MONOCYTES: 2,
    Analyte.PLATELETS: 0,
    Analyte.HEMOGLOBIN: 1,
    Analyte.ALBUMIN: 1,
    Analyte.LDH: 0,
}

#: Alternative units a laboratory may report, with the exact factor
#: ``value_in_alternative = value_in_canonical * factor`` (UCUM-convertible;
#: mmol/L for haemoglobin and % differentials are avoided because they need a
#: molar mass or the WBC to convert).
ALTERNATIVE_UNITS: dict[str, dict[Analyte, tuple[str, int]]] = {
    "kilo-per-microlitre": {
        a: ("10*3/uL", 1)
        for a in (
            Analyte.WBC,
            Analyte.NEUTROPHILS,
            Analyte.LYMPHOCYTES,
            Analyte.MONOCYTES,
            Analyte.PLATELETS,
        )
    },
    "per-microlitre-and-g-per-litre": {
        **{
            a: ("/uL", 1000)
            for a in (
                Analyte.WBC,
                Analyte.NEUTROPHILS,
                Analyte.LYMPHOCYTES,
                Analyte.MONOCYTES,
                Analyte.PLATELETS,
            )
        },
        Analyte.HEMOGLOBIN: ("g/L", 10),
        Analyte.ALBUMIN: ("g/L", 10),
    },
}

AGENTS = ("pembrolizumab", "nivolumab", "atezolizumab", "durvalumab")
METASTASIS_SITES = ("adrenal", "bone", "brain", "liver")
#: Lung resections a synthetic patient may have had (keys of ``PROCEDURE_CODES``).
THORACIC_PROCEDURES = ("lobectomy", "segmentectomy", "pneumonectomy")
#: Cycle length used for every agent (q3w; a simplification for nivolumab/durvalumab).
CYCLE_DAYS = 21


@dataclass(frozen=True)
class ReportedLab:
    """One lab result as the lab reported it, plus its canonical truth."""

    observation_id: str
    analyte: Analyte
    timepoint: LabTimepoint | None  # None: outside every window (a distractor)
    effective: dt.datetime
    value: float | int  # in ``unit``; an int when reported without decimals
    unit: str
    canonical_value: float


@dataclass(frozen=True)
class PriorProcedure:
    """A surgical procedure before treatment start, as the hospital recorded it.

    ``kind`` is a key of :data:`~.fhir_resources.PROCEDURE_CODES`; ``thoracic``
    says whether it is a lung resection (what "previous surgery" means).
    """

    procedure_id: str
    kind: str
    thoracic: bool
    performed: dt.datetime


@dataclass(frozen=True)
class ClinicalDraw:
    """The clinical truth and what the hospital systems recorded of it."""

    record: ClinicalRecord
    labs: tuple[ReportedLab, ...]
    cycle_dates: tuple[dt.date, ...]
    pdl1_date: dt.date
    diagnosis_date: dt.date
    procedures: tuple[PriorProcedure, ...] = ()


def draw_clinical(
    rng: np.random.Generator,
    patient_id: str,
    fhir_patient_id: str,
    treatment_start: dt.date,
    course: ResponseCourse,
    signal: float,
    procedures: tuple[PriorProcedure, ...] = (),
) -> ClinicalDraw:
    """Draw demographics, history and the hemogram, coupled to the response latent.

    Baseline NLR, PD-L1, albumin and LDH carry part of the signal as in the
    literature (low NLR, high PD-L1, high albumin, low LDH -> benefit); the
    on-treatment trajectories come from ``course``.  ``procedures`` (from
    :func:`draw_procedures`, its own random stream) set ``previous_surgery``.
    """
    z = course.latent
    sex = "male" if rng.random() < 0.62 else "female"
    age_days = int(rng.uniform(45, 84) * 365.25)
    birth_date = treatment_start - dt.timedelta(days=age_days)
    histology = str(rng.choice(["adenocarcinoma", "squamous", "other"], p=[0.6, 0.3, 0.1]))
    smoking = str(rng.choice(["never", "former", "current"], p=[0.12, 0.55, 0.33]))
    bmi = round(float(np.clip(rng.normal(25.0, 4.0), 16.0, 42.0)), 1)
    pdl1: float | None = _pdl1(rng, z, signal)
    if rng.random() < 0.12:
        pdl1 = None
    n_sites = int(rng.choice([0, 1, 2, 3], p=[0.3, 0.4, 0.2, 0.1]))
    sites = tuple(sorted(str(s) for s in rng.choice(METASTASIS_SITES, size=n_sites, replace=False)))
    agent = str(rng.choice(AGENTS, p=[0.5, 0.25, 0.15, 0.1]))
    n_cycles = int(np.clip(course.outcomes.pfs_months * MONTH_DAYS // CYCLE_DAYS + 1, 3, 35))
    cycle_dates = tuple(
        treatment_start + dt.timedelta(days=CYCLE_DAYS * i) for i in range(n_cycles)
    )
    labs = _draw_labs(rng, patient_id, treatment_start, course, signal)
    panels: dict[LabTimepoint, dict[Analyte, LabValue]] = {}
    for lab in labs:
        if lab.timepoint is None:
            continue
        panels.setdefault(lab.timepoint, {})[lab.analyte] = LabValue(
            analyte=lab.analyte,
            value=lab.canonical_value,
            unit=CANONICAL_UNIT[lab.analyte],
            effective=lab.effective,
            observation_id=lab.observation_id,
        )
    record = ClinicalRecord(
        patient_id=patient_id,
        fhir_patient_id=fhir_patient_id,
        sex=sex,  # type: ignore[arg-type]
        birth_date=birth_date,
        treatment_start=treatment_start,
        treatment_agent=agent,
        treatment_source="MedicationAdministration",
        histology=histology,
        smoking_status=smoking,  # type: ignore[arg-type]
        bmi=bmi,
        pdl1_tps=pdl1,
        previous_surgery=any(p.thoracic for p in procedures),
        metastasis_sites=sites,
        labs={tp: LabPanel(timepoint=tp, values=values) for tp, values in sorted(panels.items())},
    )
    diagnosis = treatment_start - dt.timedelta(days=int(rng.integers(25, 70)))
    return ClinicalDraw(
        record=record,
        labs=tuple(labs),
        cycle_dates=cycle_dates,
        pdl1_date=diagnosis + dt.timedelta(days=int(rng.integers(5, 15))),
        diagnosis_date=diagnosis,
        procedures=procedures,
    )


def draw_procedures(
    rng: np.random.Generator, fhir_patient_id: str, treatment_start: dt.date
) -> tuple[PriorProcedure, ...]:
    """Surgical history before T0: a lung resection in ~14%, an unrelated operation in ~10%.

    14% is the share with previous surgery in seed 1's cohort (Table 1), equal
    in responders and non-responders (p = 1.0) -- so surgery carries **no
    signal** here: it is drawn independently of the response latent, and a
    model should find it uninformative.  A resection lies 6-60 months before
    T0 (a recurrence after curative surgery, now treated with immunotherapy);
    its kind follows the usual mix (lobectomy most, then sublobar resection,
    then pneumonectomy).  The unrelated operation (an appendectomy 5-40 years
    earlier) is a distractor: a client that counts any surgery gets it wrong.
    """
    procedures = []
    if rng.random() < 0.14:
        kind = str(rng.choice(THORACIC_PROCEDURES, p=[0.7, 0.18, 0.12]))
        days = int(rng.integers(round(6 * MONTH_DAYS), round(60 * MONTH_DAYS)))
        procedures.append((kind, True, days))
    if rng.random() < 0.10:
        procedures.append(("appendectomy", False, int(rng.integers(5 * 365, 40 * 365))))
    return tuple(
        PriorProcedure(
            procedure_id=f"{fhir_patient_id}-procedure-{kind}",
            kind=kind,
            thoracic=thoracic,
            performed=dt.datetime.combine(
                treatment_start - dt.timedelta(days=days),
                dt.time(int(rng.integers(8, 14)), 0),
                HOSPITAL_TZ,
            ),
        )
        for kind, thoracic, days in sorted(procedures, key=lambda p: -p[2])
    )


def _pdl1(rng: np.random.Generator, z: float, signal: float) -> float:
    """PD-L1 TPS in percent: ~30% <1%, ~35% 1-49%, ~35% >=50%, higher in responders."""
    weight = min(0.35 * signal, 0.9)
    u = 0.5 * (
        1 + math.erf((weight * z + math.sqrt(1 - weight**2) * rng.standard_normal()) / math.sqrt(2))
    )
    if u < 0.30:
        return 0.0
    if u < 0.65:
        return float(round(1 + (u - 0.30) / 0.35 * 48))
    return float(round(50 + (u - 0.65) / 0.35 * 50))


def _draw_labs(
    rng: np.random.Generator,
    patient_id: str,
    treatment_start: dt.date,
    course: ResponseCourse,
    signal: float,
) -> list[ReportedLab]:
    """Hemogram at baseline, cycle 2 and cycle 3, plus sometimes an older distractor panel.

    Windows: baseline 1-21 days before T0; cycle 2 on day 21 +-3; cycle 3 on
    day 42 +-3 (pre-dose blood draws).  The optional distractor panel lies
    40-55 days before T0, outside the 30-day baseline window, so a client
    that ignores the window gets a different record.
    """
    z = course.latent
    lymph0 = math.exp(math.log(1.5) + 0.10 * signal * z + 0.3 * rng.standard_normal())
    log_nlr0 = math.log(3.2) - 0.25 * signal * z + 0.45 * rng.standard_normal()
    mono0 = math.exp(math.log(0.6) + 0.25 * rng.standard_normal())
    plt0 = math.exp(math.log(260) - 0.05 * signal * z + 0.25 * rng.standard_normal())
    hgb0 = float(np.clip(rng.normal(12.6, 1.5), 8.0, 17.0))
    has_chemistry = rng.random() < 0.6
    alb0 = float(np.clip(rng.normal(3.8 + 0.12 * signal * z, 0.4), 2.2, 5.0))
    ldh0 = math.exp(math.log(230) - 0.08 * signal * z + 0.3 * rng.standard_normal())
    convention = str(rng.choice(["canonical", *ALTERNATIVE_UNITS], p=[0.5, 0.25, 0.25]))
    schedule: list[tuple[LabTimepoint | None, dt.datetime, float, float]] = []
    start = dt.datetime.combine(treatment_start, dt.time(8, 0), HOSPITAL_TZ)
    if rng.random() < 0.2:
        schedule.append((None, start - dt.timedelta(days=int(rng.integers(40, 56))), 0.0, 0.0))
    schedule.append(
        (LabTimepoint.BASELINE, start - dt.timedelta(days=int(rng.integers(1, 22))), 0.0, 0.0)
    )
    for cycle, day, index in ((LabTimepoint.CYCLE2, 21, 0), (LabTimepoint.CYCLE3, 42, 1)):
        when = start + dt.timedelta(days=day + int(rng.integers(-3, 4)))
        schedule.append(
            (cycle, when, course.nlr_log_change[index], course.platelet_log_change[index])
        )
    labs = []
    for tp, when, d_nlr, d_plt in schedule:
        when = when + dt.timedelta(minutes=int(rng.integers(0, 180)))
        lymph = lymph0 * math.exp(0.1 * rng.standard_normal())
        values = {
            Analyte.LYMPHOCYTES: lymph,
            Analyte.NEUTROPHILS: lymph * math.exp(log_nlr0 + d_nlr + 0.08 * rng.standard_normal()),
            Analyte.MONOCYTES: mono0 * math.exp(0.1 * rng.standard_normal()),
            Analyte.PLATELETS: plt0 * math.exp(d_plt + 0.05 * rng.standard_normal()),
            Analyte.HEMOGLOBIN: hgb0 + 0.3 * rng.standard_normal(),
        }
        values[Analyte.WBC] = (
            values[Analyte.LYMPHOCYTES]
            + values[Analyte.NEUTROPHILS]
            + values[Analyte.MONOCYTES]
            + 0.25
        )
        if has_chemistry:
            values[Analyte.ALBUMIN] = alb0 + 0.1 * rng.standard_normal()
            values[Analyte.LDH] = ldh0 * math.exp(0.1 * rng.standard_normal())
        tag = tp.value if tp is not None else "prior"
        for analyte, raw in values.items():
            if rng.random() < 0.07:
                continue  # not measured
            canonical = _round(max(raw, 0.01), CANONICAL_DECIMALS[analyte])
            unit, factor = CANONICAL_UNIT[analyte], 1
            if convention != "canonical" and analyte in ALTERNATIVE_UNITS[convention]:
                unit, factor = ALTERNATIVE_UNITS[convention][analyte]
            decimals = max(CANONICAL_DECIMALS[analyte] - _log10(factor), 0)
            reported = _round(canonical * factor, decimals)
            labs.append(
                ReportedLab(
                    observation_id=f"{patient_id}-{tag}-{analyte.value}".lower(),
                    analyte=analyte,
                    timepoint=tp,
                    effective=when,
                    value=reported if decimals > 0 else int(reported),
                    unit=unit,
                    canonical_value=canonical,
                )
            )
    return labs


def _round(value: float, decimals: int) -> float:
    return float(round(value, decimals)) if decimals > 0 else float(round(value))


def _log10(factor: int) -> int:
    return len(str(factor)) - 1
