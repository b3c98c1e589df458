"""Step 4 of training's feature extraction: which radiomics features are robust.

The paper keeps only radiomics features whose value survives small changes of
the scan and of the contour: ICC(3,1) >= 0.85 across perturbed copies
(:mod:`icibenefit.training.robustness` makes the copies and computes the ICC).
Only training patients' baseline CTs are perturbed, so the held-out set never
influences which features exist; the per-scan tables run in the process pool
and are cached like every other timepoint job.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from icibenefit.errors import IciBenefitError, TrainingError
from icibenefit.pipeline.images import load_ct_volume
from icibenefit.pipeline.inference import PlannedTimepoint
from icibenefit.pipeline.radiomics_features import extract_radiomics
from icibenefit.pipeline.segmentation import load_tumour_mask
from icibenefit.training.robustness import (
    PerturbationConfig,
    perturbed_features,
    select_robust_features,
)
from icibenefit.training.timepoint_jobs import run_parallel, timepoint_cache_key

logger = logging.getLogger(__name__)

#: Training baseline CTs whose perturbations judge feature robustness (ICC needs >= 2).
ROBUSTNESS_SCANS = 12
ICC_THRESHOLD = 0.85


def robustness_table(
    planned: PlannedTimepoint,
    normalizer: Any,
    params: Mapping[str, Any],
    primary_labels: Sequence[str],
    seed: int,
    cache_file: Path | None,
) -> dict[str, dict[str, float]] | None:
    """One training CT's radiomics under every perturbation (``None`` if unusable), cached."""
    if cache_file is not None and cache_file.is_file():
        table: dict[str, dict[str, float]] | None = json.loads(
            cache_file.read_text(encoding="utf-8")
        )
        return table
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
        cache_file.with_suffix(".tmp").write_text(json.dumps(table), encoding="utf-8")
        cache_file.with_suffix(".tmp").replace(cache_file)
    return table


def select_robust_radiomics(
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
    robust_scans = [plan[0] for pid, plan in sorted(plans.items()) if plan and pid not in test_ids]
    tables = run_parallel(
        robustness_table,
        [
            (
                t,
                normalizer,
                params,
                primary_labels,
                seed,
                None
                if cache_dir is None
                else cache_dir / f"{timepoint_cache_key('robustness', t, parameters)}.json",
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
