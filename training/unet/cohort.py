"""Fit the UNET on a cohort's CT timepoints (the training side of :mod:`.features`).

Every planned timepoint with a tumour mask is loaded with the pipeline's
volume and mask readers and sampled by :func:`~icibenefit.pipeline.unet.unet_patch`
(the function inference uses), in a process pool; the network is then trained
on all patches at once.  Segmentation needs no outcome, so any timepoint of
any training patient may serve (baseline and follow-ups alike).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from icibenefit.errors import IciBenefitError, TrainingError
from icibenefit.pipeline.images import load_ct_volume
from icibenefit.pipeline.segmentation import load_tumour_mask
from icibenefit.pipeline.unet import unet_patch
from icibenefit.training.unet.train import UNetConfig, UNetHistory, train_unet

if TYPE_CHECKING:
    from icibenefit.pipeline.inference import PlannedTimepoint
    from icibenefit.pipeline.normalization import IntensityNormalizer

logger = logging.getLogger(__name__)


def _patch(
    planned: PlannedTimepoint, normalizer: IntensityNormalizer, primary_labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        ct = load_ct_volume(planned.ct_files)
        mask = load_tumour_mask(planned.segmentation_file, ct, primary_labels=primary_labels)
        patch = unet_patch(ct.image, mask.mask, normalizer)
    except IciBenefitError as exc:
        logger.info("UNET patch of %s skipped: %s", planned.label, exc)
        return None
    return patch.image, patch.mask


def fit_unet_on_timepoints(
    timepoints: Sequence[PlannedTimepoint],
    normalizer: IntensityNormalizer,
    config: UNetConfig,
    seed: int,
    workers: int,
    primary_labels: Sequence[str],
) -> tuple[dict[str, torch.Tensor], UNetHistory, int]:
    """Train the UNET on the tumour patches of ``timepoints``; weights, history, patch count.

    ``primary_labels`` choose the tumour among several segments, as inference does.

    Raises
    ------
    TrainingError
        When no timepoint yields a patch.
    """
    # Spawned workers, as the trainer's: forking a parent that has run torch can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        patches: list[Any] = list(
            pool.map(
                _patch,
                timepoints,
                [normalizer] * len(timepoints),
                [tuple(primary_labels)] * len(timepoints),
            )
        )
    usable = [p for p in patches if p is not None]
    if not usable:
        raise TrainingError("no CT timepoint with a tumour mask to train the UNET on")
    images = np.stack([image for image, _ in usable])
    masks = np.stack([mask for _, mask in usable])
    state, history = train_unet(images, masks, config, seed)
    logger.info(
        "UNET: %d patches, %d epochs, final loss %.3f, Dice %.3f",
        len(usable),
        config.epochs,
        history.loss[-1],
        history.dice[-1],
    )
    return state, history, len(usable)
