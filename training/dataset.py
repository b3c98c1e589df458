"""A training cohort: patients, labels per endpoint, and seed 1's held-out split.

The cohort is read from the synthetic-cohort layout (``manifest.json`` with the
clinical record and outcomes of every patient, DICOM under ``dicom/``).  Imaging
features do not come from the manifest: they are computed from the DICOM files
by the same functions inference uses (:mod:`icibenefit.pipeline.inference`).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icibenefit.domain import ENDPOINTS, ClinicalRecord
from icibenefit.errors import TrainingError
from icibenefit.training.cohort_manifest import MANIFEST_NAME, Outcomes, load_manifest


@dataclass(frozen=True)
class CohortPatient:
    """One patient of a training cohort."""

    patient_id: str
    record: ClinicalRecord
    outcomes: Outcomes
    dicom_dir: Path


@dataclass(frozen=True)
class Cohort:
    """The patients of a cohort directory and whether it is synthetic."""

    root: Path
    patients: tuple[CohortPatient, ...]
    synthetic: bool
    fingerprint: str


def load_cohort(cohort_dir: Path | str) -> Cohort:
    """Read a cohort directory written in the synthetic-cohort layout.

    Raises
    ------
    TrainingError
        When the directory has no ``manifest.json``.
    """
    root = Path(cohort_dir)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise TrainingError(f"not a cohort directory (no {MANIFEST_NAME}): {root}")
    manifest = load_manifest(root)
    patients = tuple(
        CohortPatient(
            patient_id=p.patient_id,
            record=p.clinical_record,
            outcomes=p.outcomes,
            dicom_dir=root / "dicom" / p.patient_id,
        )
        for p in manifest.patients
    )
    fingerprint = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    # Every cohort in this layout comes from the generator (it records its name),
    # so a model trained on it is a demonstration model.
    return Cohort(root, patients, synthetic=bool(manifest.generator), fingerprint=fingerprint)


def endpoint_label(outcomes: Outcomes, endpoint: str) -> int | None:
    """1 = responder (event-free beyond the landmark), 0 = not, ``None`` = excluded.

    A patient censored at or before the landmark has unknown status and is
    excluded from that endpoint (METHOD.md); an event exactly at the landmark
    is not "longer than" it, so it counts as non-response.
    """
    spec = ENDPOINTS[endpoint]
    months, event = (
        (outcomes.pfs_months, outcomes.pfs_event)
        if spec.kind == "pfs"
        else (outcomes.os_months, outcomes.os_event)
    )
    if months > spec.landmark_months:
        return 1
    return 0 if event else None


def holdout_split(eligible: Mapping[str, tuple[bool, ...]], fraction: float, seed: int) -> set[str]:
    """Choose the held-out test patients, stratified on follow-up availability.

    Parameters
    ----------
    eligible
        Patient id -> stratum key (e.g. ``(has imaging follow-up, has clinical
        follow-up)``) for the patients that may be tested: those with baseline
        imaging and clinical data (seed 1 drew its 25% from them only).
    fraction
        Share of the eligible patients to hold out (0.25 in seed 1).
    seed
        Seeds the draw inside each stratum.

    Notes
    -----
    scikit-learn's ``train_test_split(stratify=...)`` refuses strata of one
    patient, which small cohorts have; so the count per stratum is allocated by
    largest remainder (``round(fraction * n)`` in total, as close to
    proportional as integers allow) and drawn with a seeded permutation.
    """
    if not eligible:
        return set()
    strata: dict[tuple[bool, ...], list[str]] = defaultdict(list)
    for patient_id in sorted(eligible):
        strata[eligible[patient_id]].append(patient_id)
    keys = sorted(strata)
    total = round(fraction * len(eligible))
    quotas = {key: fraction * len(strata[key]) for key in keys}
    counts = {key: math.floor(quotas[key]) for key in keys}
    by_remainder = sorted(keys, key=lambda key: (-(quotas[key] - counts[key]), key))
    for key in by_remainder[: total - sum(counts.values())]:
        counts[key] += 1
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for key in keys:
        members = strata[key]
        order = rng.permutation(len(members))
        chosen.update(members[i] for i in order[: counts[key]])
    return chosen
