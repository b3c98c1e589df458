"""Generate a whole synthetic cohort on disk: DICOM, FHIR NDJSON, CSV and manifest.

Each patient draws from its own generators, seeded by (cohort seed, patient
index, stream), so patients are independent of each other and of the cohort
size (patient 3 of a 12-patient cohort equals patient 3 of a 40-patient one),
and adding a new random quantity to one stream never shifts another.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from icibenefit import __version__
from icibenefit.domain import Analyte, LabTimepoint
from icibenefit.privacy import pseudonymize
from icibenefit.synth.anatomy import Anatomy, draw_anatomy
from icibenefit.synth.clinical import ClinicalDraw, draw_clinical, draw_procedures
from icibenefit.synth.ct import (
    PatientInfo,
    StudyInfo,
    build_ct_slices,
    derive_uid,
    write_series,
)
from icibenefit.synth.fhir_resources import DEFAULT_IDENTIFIER_SYSTEM, patient_resources
from icibenefit.synth.outcomes import (
    DEFAULT_SIGNAL,
    DEFAULT_SURVIVAL_SCALE,
    MONTH_DAYS,
    ResponseCourse,
    draw_course,
)
from icibenefit.synth.phantom import (
    Grid,
    TumourAppearance,
    TumourShape,
    draw_tumour,
    grid_for,
    render_volume,
    tumour_mask,
)
from icibenefit.synth.rtstruct import build_rtstruct
from icibenefit.synth.segmentation import SEGMENT_LABEL, build_seg
from icibenefit.training.cohort_manifest import (
    MANIFEST_NAME,
    CohortManifest,
    PatientEntry,
    SegmentationEntry,
    TimepointEntry,
)

log = logging.getLogger(__name__)

Size = Literal["small", "full"]
FHIR_TYPES = ("Patient", "Observation", "MedicationAdministration", "Condition", "Procedure")

#: A tumour below this volume is "no longer visible": no segmentation is written.
VANISHED_ML = 1.0
#: Every fourth patient (index % 4 == 3) gets an RTSTRUCT instead of a SEG: 25%,
#: and always present in any cohort of four or more.
RTSTRUCT_EVERY = 4
#: Largest visit-to-visit repositioning of the patient (x, y, z mm).
_TABLE_SHIFT_MM = (4.0, 4.0, 5.0)
_FIRST_TREATMENT_START = dt.date(2019, 1, 7)
_STREAM_COURSE, _STREAM_CLINICAL, _STREAM_SCHEDULE, _STREAM_ANATOMY, _STREAM_IMAGE = range(5)
#: Surgical history; a stream of its own so that adding it shifted nothing else.
_STREAM_PROCEDURES = 5


@dataclass(frozen=True)
class _Scan:
    label: Literal["baseline", "followup1", "followup2"]
    when: dt.datetime
    months_after_start: float


def generate_cohort(
    out_dir: Path | str,
    n_patients: int,
    seed: int,
    size: Size = "small",
    signal: float = DEFAULT_SIGNAL,
    identifier_system: str = DEFAULT_IDENTIFIER_SYSTEM,
    survival_scale: float = DEFAULT_SURVIVAL_SCALE,
) -> CohortManifest:
    """Write a cohort of ``n_patients`` into ``out_dir`` and return its manifest.

    Parameters
    ----------
    out_dir
        Target directory; created if missing, else it must be empty (so an
        earlier or half-written cohort is never silently mixed with a new one).
    n_patients, seed
        Cohort size and seed; the same seed gives byte-identical files.
    size
        ``"small"`` (64 x 64 x 24, tests) or ``"full"`` (512 x 512 x 150, benchmarks).
    signal
        Predictability of the outcome from the data (see :mod:`.outcomes`).
    identifier_system
        FHIR Patient.identifier system of the DICOM PatientID.
    survival_scale
        1 (default): median OS ~10 months, few patients event-free beyond 36
        months; :data:`~.outcomes.LONG_SURVIVAL_SCALE` gives a long-survival
        cohort in which the 36-month landmarks are estimable (see
        :mod:`.outcomes`).  Recorded in the manifest only when not 1.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    if signal < 0 or not math.isfinite(signal):
        raise ValueError(f"signal must be a finite number >= 0, got {signal}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not (survival_scale >= 1 and math.isfinite(survival_scale)):
        raise ValueError(f"survival_scale must be a finite number >= 1, got {survival_scale}")
    grid = grid_for(size)
    root = Path(out_dir)
    if root.is_dir() and any(root.iterdir()):
        what = "a cohort" if (root / MANIFEST_NAME).exists() else "files"
        raise FileExistsError(f"{root} already holds {what}; choose a new or empty directory")
    root.mkdir(parents=True, exist_ok=True)
    fhir: dict[str, list[dict[str, Any]]] = {name: [] for name in FHIR_TYPES}
    patients = []
    csv_rows = []
    for index in range(n_patients):
        entry, draw = _generate_patient(root, seed, index, grid, signal, survival_scale)
        for name, resources in patient_resources(
            draw, f"Patient {index + 1}", identifier_system
        ).items():
            fhir[name].extend(resources)
        patients.append(entry)
        csv_rows.append(_csv_row(entry, draw))
        log.info(
            "synth patient %s: %d CT timepoints",
            pseudonymize(entry.patient_id, f"synth{seed}"),
            len(entry.timepoints),
        )
    (root / "fhir").mkdir(exist_ok=True)
    for name, resources in fhir.items():
        lines = (json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in resources)
        (root / "fhir" / f"{name}.ndjson").write_text(
            "".join(f"{line}\n" for line in lines), encoding="utf-8"
        )
    _write_csv(root / "clinical.csv", csv_rows)
    manifest = CohortManifest(
        generator=f"icibenefit.synth {__version__}",
        seed=seed,
        size=size,
        signal=signal,
        survival_scale=None if survival_scale == DEFAULT_SURVIVAL_SCALE else survival_scale,
        patients=patients,
    )
    (root / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


@dataclass(frozen=True)
class _ImagedPatient:
    """What stays the same across one patient's CT visits."""

    seed: int
    index: int
    info: PatientInfo
    anatomy: Anatomy
    tumour: TumourShape
    look: TumourAppearance
    course: ResponseCourse
    rtstruct: bool


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream])


def _generate_patient(
    root: Path, seed: int, index: int, grid: Grid, signal: float, survival_scale: float
) -> tuple[PatientEntry, ClinicalDraw]:
    patient_id = f"SYN{seed}-{index + 1:04d}"
    course = draw_course(_rng(seed, index, _STREAM_COURSE), signal, survival_scale)
    schedule_rng = _rng(seed, index, _STREAM_SCHEDULE)
    treatment_start = _FIRST_TREATMENT_START + dt.timedelta(
        days=int(schedule_rng.integers(0, 5 * 365))
    )
    fhir_patient_id = f"pat-{patient_id.lower()}"
    procedures = draw_procedures(
        _rng(seed, index, _STREAM_PROCEDURES), fhir_patient_id, treatment_start
    )
    draw = draw_clinical(
        _rng(seed, index, _STREAM_CLINICAL),
        patient_id,
        fhir_patient_id,
        treatment_start,
        course,
        signal,
        procedures,
    )
    scans = _schedule_scans(schedule_rng, treatment_start, course)
    record = draw.record
    patient = PatientInfo(
        patient_id=patient_id,
        name=f"SYNTHETIC^PATIENT{index + 1:04d}",
        birth_date=record.birth_date or treatment_start,
        sex="M" if record.sex == "male" else "F",
    )
    anatomy_rng = _rng(seed, index, _STREAM_ANATOMY)
    anatomy = draw_anatomy(anatomy_rng)
    baseline_ml = float(np.clip(anatomy_rng.lognormal(math.log(22.0), 0.7), 3.0, 110.0))
    shape = draw_tumour(anatomy_rng, anatomy, baseline_ml)
    base_look = TumourAppearance(
        mean_hu=float(anatomy_rng.uniform(25, 45)),
        texture_sd=float(anatomy_rng.uniform(15, 35)),
        necrosis_hu=float(anatomy_rng.uniform(0, 60)),
    )
    subject = _ImagedPatient(
        seed=seed,
        index=index,
        info=patient,
        anatomy=anatomy,
        tumour=shape,
        look=base_look,
        course=course,
        rtstruct=index % RTSTRUCT_EVERY == RTSTRUCT_EVERY - 1,
    )
    timepoints = [
        _write_timepoint(root, grid, subject, scan, number) for number, scan in enumerate(scans)
    ]
    entry = PatientEntry(
        patient_id=patient_id,
        treatment_start=treatment_start,
        responder_latent=course.latent,
        outcomes=course.outcomes,
        clinical_record=record,
        timepoints=timepoints,
    )
    return entry, draw


def _schedule_scans(
    rng: np.random.Generator, start: dt.date, course: ResponseCourse
) -> list[_Scan]:
    """Baseline 3-55 days before T0; up to two follow-ups at ~6-9 and ~12-17 weeks.

    A follow-up that would fall after the patient's death or end of follow-up
    is not performed, so early deaths have fewer scans, as in real cohorts.
    """

    def at(day_offset: int) -> dt.datetime:
        minutes = int(rng.integers(8 * 60, 17 * 60))
        return dt.datetime.combine(
            start + dt.timedelta(days=day_offset), dt.time(minutes // 60, minutes % 60)
        )

    baseline_day = -int(rng.integers(3, 56))
    scans = [_Scan("baseline", at(baseline_day), baseline_day / MONTH_DAYS)]
    n_followups = int(rng.choice([0, 1, 2], p=[0.15, 0.35, 0.5]))
    last_day = course.outcomes.os_months * MONTH_DAYS
    for label, (lo, hi) in (("followup1", (42, 64)), ("followup2", (84, 120)))[:n_followups]:
        day = int(rng.integers(lo, hi))
        if day <= last_day:
            scans.append(_Scan(label, at(day), day / MONTH_DAYS))  # type: ignore[arg-type]
    return scans


def _write_timepoint(
    root: Path, grid: Grid, subject: _ImagedPatient, scan: _Scan, number: int
) -> TimepointEntry:
    """Render, write and describe one CT visit (and its segmentation, if visible)."""
    seed, index, patient, course = subject.seed, subject.index, subject.info, subject.course
    key = f"icibenefit-synth/{seed}/{patient.patient_id}/{scan.label}"
    image_rng = _rng(seed, index, _STREAM_IMAGE * 10 + number)
    grid = grid.shifted(image_rng, _TABLE_SHIFT_MM)
    # Before T0 the tumour is untreated; the baseline scan shows it as drawn.
    months = max(scan.months_after_start, 0.0)
    volume_ratio = min(math.exp(course.log_volume_rate * months), 4.0)
    baseline_ml = 4 / 3 * math.pi * float(np.prod(subject.tumour.semi_axes)) / 1000
    mask = tumour_mask(grid, subject.tumour, volume_ratio ** (1 / 3))
    if baseline_ml * volume_ratio < VANISHED_ML or not mask.any():
        mask[:] = False
    texture_sd = subject.look.texture_sd * math.exp(course.log_texture_rate * months)
    look = TumourAppearance(
        mean_hu=subject.look.mean_hu + course.mean_hu_rate * months,
        texture_sd=float(np.clip(texture_sd, 5, 90)),
        necrosis_hu=subject.look.necrosis_hu,
    )
    # Noise differs between visits (dose modulation, another scanner): radiomics
    # must cope with it, as with real follow-ups.
    noise_sd = (12.0 if grid.shape[1] <= 128 else 20.0) * float(image_rng.uniform(0.8, 1.25))
    volume = render_volume(image_rng, grid, subject.anatomy, mask, look, noise_sd)
    study = StudyInfo(
        study_uid=derive_uid(key, "study"),
        series_uid=derive_uid(key, "ct-series"),
        frame_of_reference_uid=derive_uid(key, "frame-of-reference"),
        accession_number=f"S{seed % 10000:04d}{index + 1:05d}{number}",
        study_id=f"CT{number + 1}",
        when=scan.when,
    )
    slices = build_ct_slices(patient, study, grid, volume, key)
    tp_dir = root / "dicom" / patient.patient_id / scan.label
    write_series(slices, tp_dir / "ct")
    segmentation = None
    if mask.any():
        annotated = scan.when + dt.timedelta(days=1, hours=2)
        sop_uid = derive_uid(key, "segmentation")
        series_uid = derive_uid(key, "segmentation-series")
        if subject.rtstruct:
            path = tp_dir / "rtstruct.dcm"
            build_rtstruct(slices, mask, series_uid, sop_uid, annotated).save_as(
                path, enforce_file_format=True
            )
        else:
            path = tp_dir / "seg.dcm"
            build_seg(slices, mask, series_uid, sop_uid, annotated, key).save_as(
                path, enforce_file_format=True
            )
        segmentation = SegmentationEntry(
            kind="RTSTRUCT" if subject.rtstruct else "SEG",
            path=path.relative_to(root).as_posix(),
            sop_instance_uid=sop_uid,
            segment_label=SEGMENT_LABEL,
        )
    return TimepointEntry(
        label=scan.label,
        study_uid=study.study_uid,
        series_uid=study.series_uid,
        frame_of_reference_uid=study.frame_of_reference_uid,
        study_date=scan.when.date(),
        ct_dir=(tp_dir / "ct").relative_to(root).as_posix(),
        n_slices=len(slices),
        segmentation=segmentation,
        tumour_volume_ml=round(float(mask.sum()) * grid.voxel_ml, 3),
    )


def _csv_row(entry: PatientEntry, draw: ClinicalDraw) -> dict[str, Any]:
    record = draw.record
    row: dict[str, Any] = {
        "patient_id": entry.patient_id,
        "fhir_patient_id": record.fhir_patient_id,
        "sex": record.sex,
        "birth_date": record.birth_date.isoformat() if record.birth_date else None,
        "age_at_treatment_start": round(record.age_at_treatment_start or 0.0, 2),
        "treatment_start": record.treatment_start.isoformat(),
        "treatment_agent": record.treatment_agent,
        "histology": record.histology,
        "smoking_status": record.smoking_status,
        "bmi": record.bmi,
        "pdl1_tps": record.pdl1_tps,
        "previous_surgery": record.previous_surgery,
        "metastasis_sites": ";".join(record.metastasis_sites),
    }
    for tp in LabTimepoint:
        panel = record.panel(tp)
        for analyte in Analyte:
            row[f"{tp.value}_{analyte.value}"] = panel.get(analyte)
    row["n_ct_timepoints"] = len(entry.timepoints)
    row.update(entry.outcomes.model_dump())
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
