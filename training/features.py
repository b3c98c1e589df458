"""Cohort feature extraction for training, through inference's own functions.

Order matters because some preprocessing is learned from training patients:

1. plan every patient's CT timepoints (:func:`~icibenefit.pipeline.inference.plan_timepoints`);
2. draw the held-out split (needs to know who has baseline and follow-up CT);
3. fit the HU z-score statistics on the training patients' baseline CTs;
4. extract every timepoint's features with
   :func:`~icibenefit.pipeline.inference.timepoint_features` in a process pool
   (2 workers), with a rich progress bar and an on-disk cache keyed by the
   input instances and every parameter the features depend on.

Interim gaps (see the training report): robust-feature selection by ICC
waits for ``icibenefit.pipeline.robustness`` (all radiomics features are kept
meanwhile) and DF-imm waits for a pretrained CNN checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icibenefit.domain import ImagingTimepoint
from icibenefit.errors import IciBenefitError
from icibenefit.pipeline.inference import (
    ImagingSettings,
    PatientFeatures,
    PlannedTimepoint,
    TimepointFeatures,
    normalizer_from,
    plan_timepoints,
    timepoint_features,
)
from icibenefit.training.dataset import Cohort

logger = logging.getLogger(__name__)

#: Training baseline CTs pooled for the HU statistics (bounded: statistics converge fast).
MAX_NORMALIZER_SCANS = 20


@dataclass
class ExtractedFeatures:
    """Per-patient features plus what was learned to compute them."""

    features: dict[str, PatientFeatures]
    test_ids: set[str]
    preprocessing: dict[str, Any]
    robust_features: list[str]
    pyradiomics_params: dict[str, Any]
    cnn_state: Mapping[str, Any] | None = None
    cnn_manifest: dict[str, Any] | None = None

    @property
    def has_radiomics(self) -> bool:
        """Whether any patient has imaging features."""
        return any(f.imaging for f in self.features.values())

    @property
    def has_deep(self) -> bool:
        """Whether DF-imm features were extracted."""
        return any(t.deep is not None for f in self.features.values() for t in f.imaging)


def _cache_key(planned: PlannedTimepoint, settings_digest: str) -> str:
    # The input instance set is named by its files' bytes digest, cheap for small CTs
    # and exact: a changed instance gives a new key.
    digest = hashlib.sha256(settings_digest.encode())
    for path in (*planned.ct_files, planned.segmentation_file):
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


def _to_json(features: TimepointFeatures) -> dict[str, Any]:
    return {
        "timepoint": features.timepoint.model_dump(mode="json"),
        "radiomics": dict(features.radiomics),
        "deep": None if features.deep is None else dict(features.deep),
        "cnn_probability": features.cnn_probability,
    }


def _from_json(document: dict[str, Any]) -> TimepointFeatures:
    return TimepointFeatures(
        ImagingTimepoint.model_validate(document["timepoint"]),
        document["radiomics"],
        document["deep"],
        document["cnn_probability"],
    )


def _extract_one(
    planned: PlannedTimepoint, settings: ImagingSettings, cache_file: Path | None
) -> TimepointFeatures | str:
    if cache_file is not None and cache_file.is_file():
        return _from_json(json.loads(cache_file.read_text()))
    try:
        features = timepoint_features(planned, settings)
    except IciBenefitError as exc:
        return f"{planned.label} dropped: {exc}"
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(_to_json(features)))
        tmp.replace(cache_file)
    return features


def extract(
    cohort: Cohort,
    *,
    split: Callable[[dict[str, PatientFeatures]], set[str]],
    want_deep: bool,
    seed: int,
    workers: int,
    cache_dir: Path | None,
    progress: bool,
) -> ExtractedFeatures:
    """Run the stages of the module docstring; ``split`` draws the test set from availability."""
    import SimpleITK as sitk
    from rich.progress import Progress

    from icibenefit.pipeline.images import load_ct_volume
    from icibenefit.pipeline.normalization import IntensityNormalizer
    from icibenefit.pipeline.radiomics_features import load_params, params_digest

    plans: dict[str, list[PlannedTimepoint]] = {}
    decisions: dict[str, list[str]] = {}
    for patient in cohort.patients:
        files = (
            sorted(str(p) for p in patient.dicom_dir.rglob("*.dcm"))
            if patient.dicom_dir.is_dir()
            else []
        )
        plans[patient.patient_id], decisions[patient.patient_id] = plan_timepoints(
            files, patient.record.treatment_start
        )
    # Availability only (placeholders) decides the split, before anything is learned.
    availability = {
        p.patient_id: PatientFeatures(
            p.record,
            tuple(TimepointFeatures(_placeholder(t), {}) for t in plans[p.patient_id]),
        )
        for p in cohort.patients
    }
    test_ids = split(availability)
    params = load_params()
    if not any(plans.values()):
        features = {
            p.patient_id: PatientFeatures(p.record, (), tuple(decisions[p.patient_id]))
            for p in cohort.patients
        }
        return ExtractedFeatures(features, test_ids, {}, [], params)

    train_baselines = [
        plan[0] for pid, plan in sorted(plans.items()) if plan and pid not in test_ids
    ][:MAX_NORMALIZER_SCANS]
    fitted = IntensityNormalizer().fit(
        sitk.GetArrayFromImage(load_ct_volume(t.ct_files).image) for t in train_baselines
    )
    preprocessing = {
        "hu": {
            "clip_min": fitted.clip_min,
            "clip_max": fitted.clip_max,
            "mean": fitted.mean_,
            "std": fitted.std_,
            "n_voxels": fitted.n_voxels_seen_,
        }
    }
    # Rebuilt from the stored numbers, exactly as inference does from the bundle.
    normalizer = normalizer_from(preprocessing["hu"])
    settings = ImagingSettings(normalizer, params, None, None)
    settings_digest = json.dumps(
        {"hu": preprocessing["hu"], "params": params_digest(params), "deep": None}, sort_keys=True
    )
    jobs = [(pid, t) for pid, plan in sorted(plans.items()) for t in plan]
    results: dict[tuple[str, str], TimepointFeatures | str] = {}
    with (
        ProcessPoolExecutor(max_workers=workers) as pool,
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task("extracting imaging features", total=len(jobs))
        futures = {
            pool.submit(
                _extract_one,
                t,
                settings,
                None if cache_dir is None else cache_dir / f"{_cache_key(t, settings_digest)}.json",
            ): (pid, t.label)
            for pid, t in jobs
        }
        for future, key in futures.items():
            results[key] = future.result()
            bar.advance(task)
    features = {}
    for patient in cohort.patients:
        pid = patient.patient_id
        kept: list[TimepointFeatures] = []
        notes = list(decisions[pid])
        for t in plans[pid]:
            outcome = results[(pid, t.label)]
            if isinstance(outcome, str):
                notes.append(outcome)
            elif t.label == "baseline" or (kept and kept[0].timepoint.label == "baseline"):
                kept.append(outcome)
        features[pid] = PatientFeatures(patient.record, tuple(kept), tuple(notes))
    names = sorted({n for f in features.values() for t in f.imaging for n in t.radiomics})
    logger.info("radiomics: %d features per timepoint (robustness selection pending)", len(names))
    return ExtractedFeatures(features, test_ids, preprocessing, names, params)


def _placeholder(planned: PlannedTimepoint) -> ImagingTimepoint:
    return ImagingTimepoint(
        label=planned.label,
        study_uid=planned.study_uid,
        series_uid=planned.series_uid,
        study_date=planned.study_date,
        days_from_treatment_start=planned.days_from_treatment_start,
    )
