"""CNN benchmarks (issue 8).

* CPU inference per tumour: DF-imm + CNN-baseline probability for one patch, as
  the pipeline calls them (batch of 1); target < 50 ms.
* Fine-tuning on the patches of a 264-patient ``small`` synthetic cohort: every
  tumour of every CT, PFS6 labels, default :class:`FineTuneConfig`.
* Default pretraining on the rendered LIDC nodules: time and held-out AUC
  (its weights are the start of the fine-tuning above, as in training).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

N_PATIENTS = 264
INFERENCE_TARGET_MS = 50.0


def _inference_ms_per_tumour(repeats: int = 100) -> tuple[float, float]:
    """Milliseconds per tumour: one patch per call on one thread (as the pipeline runs
    it, for reproducible sums), and batched."""
    import torch

    from icibenefit.pipeline.deep import build_network, deep_features_and_probability

    model = build_network(seed=0)
    patches = np.random.default_rng(0).normal(size=(repeats, 5, 47, 47)).astype(np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        deep_features_and_probability(model, patches[:2], batch_size=1)  # warm-up
        started = time.perf_counter()
        for patch in patches:
            deep_features_and_probability(model, patch[None], batch_size=1)
        single = (time.perf_counter() - started) / repeats * 1000
        started = time.perf_counter()
        deep_features_and_probability(model, patches)
        batched = (time.perf_counter() - started) / repeats * 1000
    finally:
        torch.set_num_threads(threads)
    return single, batched


def _cohort_patches(
    cohort_dir: Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """Patches of every segmented timepoint, PFS6 labels, patient ids, HU mean and std."""
    from icibenefit.pipeline.images import load_ct_volume
    from icibenefit.pipeline.normalization import IntensityNormalizer
    from icibenefit.pipeline.patches import tumour_patch
    from icibenefit.pipeline.segmentation import load_tumour_mask
    from icibenefit.synth import load_manifest

    manifest = load_manifest(cohort_dir)
    scans, labels, groups = [], [], []
    for patient in manifest.patients:
        outcome = patient.outcomes
        if outcome.pfs_months <= 6 and not outcome.pfs_event:
            continue  # censored before the landmark: no PFS6 label
        for timepoint in patient.timepoints:
            if timepoint.segmentation is None:
                continue
            ct = load_ct_volume(sorted((cohort_dir / timepoint.ct_dir).glob("*.dcm")))
            mask = load_tumour_mask(cohort_dir / timepoint.segmentation.path, ct)
            scans.append((ct.image, mask.mask))
            labels.append(int(outcome.pfs_months > 6))
            groups.append(patient.patient_id)
    import SimpleITK as sitk

    normalizer = IntensityNormalizer().fit(sitk.GetArrayViewFromImage(ct) for ct, _ in scans)
    patches = np.stack([tumour_patch(ct, mask, normalizer).image for ct, mask in scans])
    return patches, np.array(labels), np.array(groups), (normalizer.mean_, normalizer.std_)


def _fine_tuning(
    start: Mapping[str, Any], patches: np.ndarray, labels: np.ndarray, groups: np.ndarray
) -> None:
    from icibenefit.training.cnn import FineTuneConfig, fine_tune

    started, cpu = time.perf_counter(), time.process_time()
    _, history = fine_tune(
        start, patches, labels, groups, seed=0, config=FineTuneConfig(progress=False)
    )
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    best = history.epochs[history.best_epoch - 1]
    print(
        f"fine-tuning on {len(patches)} tumour patches of {len(set(groups))} patients: "
        f"{wall:.1f} s wall, {cpu:.1f} s CPU, {len(history.epochs)} epochs "
        f"(best {history.best_epoch}, early stop {history.stopped_early}), "
        f"validation PFS6 AUC per tumour {best.validation_auc:.3f}"
    )


def main() -> None:
    """Print the timings; raises only when something cannot run at all."""
    single, batched = _inference_ms_per_tumour()
    verdict = "OK" if single < INFERENCE_TARGET_MS else "ABOVE TARGET"
    print(
        f"CPU inference per tumour (DF-imm + CNN probability): {single:.1f} ms one at a time "
        f"(target < {INFERENCE_TARGET_MS:.0f} ms: {verdict}), {batched:.2f} ms batched"
    )

    from icibenefit.training.cnn import PretrainConfig, pretrain, rebase_input_normalisation

    started = time.perf_counter()
    pretrained = pretrain(PretrainConfig(progress=False), seed=0)
    print(f"default pretraining: {time.perf_counter() - started:.0f} s wall")
    print(pretrained.report.summary())

    from icibenefit.synth import generate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        cohort_dir = Path(tmp) / "cohort"
        started = time.perf_counter()
        generate_cohort(cohort_dir, N_PATIENTS, seed=1, size="small")
        generated = time.perf_counter() - started
        started = time.perf_counter()
        patches, labels, groups, hu_stats = _cohort_patches(cohort_dir)
        print(
            f"small cohort of {N_PATIENTS} patients: generated in {generated:.0f} s, "
            f"{len(patches)} tumour patches extracted in {time.perf_counter() - started:.0f} s"
        )
    report = pretrained.report
    start = rebase_input_normalisation(
        pretrained.state_dict, (report.hu_mean, report.hu_std), hu_stats
    )
    _fine_tuning(start, patches, labels, groups)


if __name__ == "__main__":
    main()
