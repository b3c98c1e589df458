"""Cohort feature extraction for training, through inference's own functions.

Order matters because some preprocessing is learned from training patients:

1. plan every patient's CT timepoints (:func:`~icibenefit.pipeline.inference.plan_timepoints`)
   under the clinical rules the bundle will be served with
   (:class:`~icibenefit.pipeline.rules.PipelineRules`, also used to choose each mask's tumour);
2. draw the held-out split (needs to know who has baseline and follow-up CT);
3. fit the HU z-score statistics on the training patients' baseline CTs;
4. select the robust radiomics features by ICC(3,1) under perturbation
   (:mod:`icibenefit.training.robust_radiomics`) on training baseline CTs;
5. extract every timepoint's features with
   :func:`~icibenefit.pipeline.inference.timepoint_features` (restricted to the
   robust list, exactly as inference calls it) in a process pool, with a rich
   progress bar and an on-disk cache keyed
   (:func:`~icibenefit.training.timepoint_jobs.timepoint_cache_key`) by the digests
   of the input files and every parameter the features depend on.

Between steps 4 and 5 the deep networks are trained on the training patients
(:mod:`icibenefit.training.deep_features`: the DF-imm CNN when deep features
are wanted, seed 2's UNET when the recipe asks for it), since their features
can only be extracted once they exist.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from icibenefit.domain import ImagingTimepoint
from icibenefit.errors import TrainingError
from icibenefit.pipeline.images import load_ct_volume
from icibenefit.pipeline.inference import (
    ImagingSettings,
    PlannedTimepoint,
    kept_timepoints,
    plan_timepoints,
    timepoint_outcome,
)
from icibenefit.pipeline.normalization import IntensityNormalizer
from icibenefit.pipeline.predictor import PatientFeatures, TimepointFeatures
from icibenefit.pipeline.radiomics_features import PRODUCT_PARAMS, load_params, params_digest
from icibenefit.pipeline.rules import PipelineRules
from icibenefit.training.dataset import Cohort
from icibenefit.training.deep_features import (
    CnnBudget,
    fine_tuned_network,
    trained_unet,
    weights_digest,
)
from icibenefit.training.recipes import ImagingSpec, UnetSpec
from icibenefit.training.robust_radiomics import select_robust_radiomics
from icibenefit.training.timepoint_jobs import run_parallel, timepoint_cache_key

logger = logging.getLogger(__name__)

#: Training baseline CTs pooled for the HU statistics (bounded: statistics converge fast).
MAX_NORMALIZER_SCANS = 20


@dataclass
class ExtractedFeatures:
    """Per-patient features plus what was learned to compute them, and under which rules."""

    features: dict[str, PatientFeatures]
    test_ids: set[str]
    preprocessing: dict[str, Any]
    robust_features: list[str]
    pyradiomics_params: dict[str, Any]
    cnn_state: Mapping[str, Any] | None = None
    cnn_manifest: dict[str, Any] | None = None
    unet_state: Mapping[str, Any] | None = None
    unet_manifest: dict[str, Any] | None = None
    rules: PipelineRules = field(default_factory=PipelineRules)

    @property
    def has_radiomics(self) -> bool:
        """Whether any patient has imaging features."""
        return any(f.imaging for f in self.features.values())

    @property
    def has_deep(self) -> bool:
        """Whether DF-imm features were extracted."""
        return any(t.deep is not None for f in self.features.values() for t in f.imaging)

    @property
    def has_unet(self) -> bool:
        """Whether UNET deep radiomics (seed 2) were extracted."""
        return any(t.unet is not None for f in self.features.values() for t in f.imaging)


def _to_json(features: TimepointFeatures) -> dict[str, Any]:
    return {
        "timepoint": features.timepoint.model_dump(mode="json"),
        "radiomics": dict(features.radiomics),
        "deep": None if features.deep is None else dict(features.deep),
        "cnn_probability": features.cnn_probability,
        "unet": None if features.unet is None else dict(features.unet),
    }


def _from_json(document: dict[str, Any]) -> TimepointFeatures:
    return TimepointFeatures(
        ImagingTimepoint.model_validate(document["timepoint"]),
        document["radiomics"],
        document["deep"],
        document["cnn_probability"],
        document.get("unet"),
    )


_WORKER_SETTINGS: list[ImagingSettings] = []


def _init_worker(settings: ImagingSettings) -> None:
    # Sent once per worker process: the CNN's weights are megabytes, jobs are many.
    _WORKER_SETTINGS[:] = [settings]


def _extract_one(planned: PlannedTimepoint, cache_file: Path | None) -> TimepointFeatures | str:
    settings = _WORKER_SETTINGS[0]
    if cache_file is not None and cache_file.is_file():
        return _from_json(json.loads(cache_file.read_text(encoding="utf-8")))
    features = timepoint_outcome(planned, settings)
    if isinstance(features, str):
        return features
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(_to_json(features)), encoding="utf-8")
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
    cnn_budget: CnnBudget | None = None,
    imaging: ImagingSpec | None = None,
    unet: UnetSpec | None = None,
    rules: PipelineRules | None = None,
    lidc_image_dir: Path | None = None,
) -> ExtractedFeatures:
    """Run the stages of the module docstring; ``split`` draws the test set from availability.

    ``imaging`` (the recipe's) may restrict the CTs to the baseline, name another
    pyradiomics parameter file of :mod:`icibenefit.pipeline`, or turn the
    robustness selection off (every feature is then kept).  ``unet`` trains
    seed 2's UNET on the training patients' CTs for the ``unet`` source.
    ``rules`` are the clinical rules inference will apply (METHOD.md's by
    default); ``lidc_image_dir`` a local LIDC-IDRI download for CNN pretraining.
    """
    spec = imaging or ImagingSpec()
    rules = rules or PipelineRules()
    plans: dict[str, list[PlannedTimepoint]] = {}
    decisions: dict[str, list[str]] = {}
    for patient in cohort.patients:
        files = (
            sorted(str(p) for p in patient.dicom_dir.rglob("*.dcm"))
            if patient.dicom_dir.is_dir()
            else []
        )
        plans[patient.patient_id], decisions[patient.patient_id] = plan_timepoints(
            files, patient.record, rules.timeline
        )
        if spec.timepoints == "baseline" and len(plans[patient.patient_id]) > 1:
            plans[patient.patient_id] = plans[patient.patient_id][:1]
            decisions[patient.patient_id].append(
                "follow-up CTs not used: the recipe is baseline-only"
            )
    # Availability only (placeholders) decides the split, before anything is learned.
    availability = {
        p.patient_id: PatientFeatures(
            p.record,
            tuple(TimepointFeatures(t.imaging_timepoint(), {}) for t in plans[p.patient_id]),
        )
        for p in cohort.patients
    }
    test_ids = split(availability)
    params = (
        load_params()
        if spec.radiomics_params == PRODUCT_PARAMS
        else load_params(Path(str(resources.files("icibenefit.pipeline") / spec.radiomics_params)))
    )
    if not any(plans.values()):
        features = {
            p.patient_id: PatientFeatures(p.record, (), tuple(decisions[p.patient_id]))
            for p in cohort.patients
        }
        return ExtractedFeatures(features, test_ids, {}, [], params, rules=rules)

    train_baselines = [
        plan[0] for pid, plan in sorted(plans.items()) if plan and pid not in test_ids
    ][:MAX_NORMALIZER_SCANS]
    fitted = IntensityNormalizer().fit(
        sitk.GetArrayFromImage(load_ct_volume(t.ct_files).image) for t in train_baselines
    )
    preprocessing = {"hu": fitted.statistics()}
    # Rebuilt from the stored numbers, exactly as inference does from the bundle.
    normalizer = IntensityNormalizer.from_statistics(preprocessing["hu"])
    parameters = {
        "hu": preprocessing["hu"],
        "radiomics": params_digest(params),
        "seed": seed,
        "rules": rules.as_settings(),
    }

    selected: tuple[str, ...] | None = None
    if spec.robustness:
        selected, preprocessing["robustness"] = select_robust_radiomics(
            plans,
            test_ids,
            normalizer,
            params,
            rules.primary_labels,
            parameters,
            seed,
            workers,
            progress,
            cache_dir,
        )
    jobs = [(pid, t) for pid, plan in sorted(plans.items()) for t in plan]
    network, cnn_state, cnn_manifest = None, None, None
    if want_deep:
        try:
            network, cnn_state, cnn_manifest = fine_tuned_network(
                cohort,
                jobs,
                test_ids,
                normalizer,
                rules.primary_labels,
                seed,
                workers,
                progress,
                cache_dir,
                cnn_budget,
                lidc_image_dir,
            )
        except TrainingError as exc:
            # A demonstration cohort of a dozen patients cannot fine-tune the CNN;
            # radiomics then stands in for DF-imm (the bundle manifest says so).
            logger.warning("DF-imm skipped: %s", exc)
            cnn_manifest = {"skipped": str(exc)}
    unet_network, unet_state, unet_manifest = None, None, None
    if unet is not None:
        unet_network, unet_state, unet_manifest = trained_unet(
            [t for pid, t in jobs if pid not in test_ids],
            normalizer,
            rules.primary_labels,
            unet,
            seed,
            workers,
        )
    settings = ImagingSettings(normalizer, params, selected, network, unet_network, rules)
    parameters |= {
        "features": None if selected is None else list(selected),
        "deep": None if cnn_state is None else weights_digest(cnn_state),
        "unet": None if unet_state is None else weights_digest(unet_state),
    }
    outcomes = run_parallel(
        _extract_one,
        [
            (
                t,
                None
                if cache_dir is None
                # The label and day offset are cached with the features: same files,
                # other timeline (rules or studies) = another entry.
                else cache_dir
                / f"{timepoint_cache_key('timepoint', t, parameters | _timepoint_parameters(t))}"
                ".json",
            )
            for _, t in jobs
        ],
        workers,
        progress,
        "extracting imaging features",
        _init_worker,
        (settings,),
    )
    results = {(pid, t.label): outcome for (pid, t), outcome in zip(jobs, outcomes, strict=True)}
    features = {}
    for patient in cohort.patients:
        pid = patient.patient_id
        kept, dropped = kept_timepoints(results[(pid, t.label)] for t in plans[pid])
        features[pid] = PatientFeatures(patient.record, kept, (*decisions[pid], *dropped))
    return ExtractedFeatures(
        features,
        test_ids,
        preprocessing,
        [] if selected is None else list(selected),
        params,
        cnn_state,
        cnn_manifest,
        unet_state,
        unet_manifest,
        rules,
    )


def _timepoint_parameters(planned: PlannedTimepoint) -> dict[str, Any]:
    return {"timepoint": [planned.label, planned.days_from_treatment_start]}
