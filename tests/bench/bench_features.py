"""Feature extraction time and peak memory per CT timepoint on a ``full`` synthetic CT.

Target (issue 5): under 10 s and 2 GB per timepoint on 2 cores.  The cohort
generator writes one ``full`` patient (512 x 512 x 150 slices at 0.7 x 0.7 x
2.5 mm); the extraction runs in a fresh spawned process limited to 2 threads
so its peak RSS (``ru_maxrss``) is the pipeline's own, imports included.  Each
stage is timed twice: the first (cold) pass includes one-time initialisation
(highdicom loads its standard tables, pyradiomics validates its schema), the
second (warm) pass is what a long-running worker pays per timepoint.  The CPU
time of each pass is printed too: on a machine shared with other jobs the wall
time overstates what the pipeline needs.
Radiomics is timed twice per pass with the product parameter file: every
feature (what training extracts once per CT, then caches) and a 173-feature
subset (the paper's robust-feature count; what inference computes from a
bundle's robust list).  ``total`` is the inference path (subset).
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_SECONDS = 10.0
TARGET_PEAK_MB = 2048.0
THREADS = 2
ROBUST_SUBSET = 173


def _measure(ct_files: list[str], segmentation: str, results: Any) -> None:
    started = time.perf_counter()
    import numpy as np
    import SimpleITK as sitk

    from icibenefit.pipeline.images import load_ct_volume
    from icibenefit.pipeline.normalization import IntensityNormalizer
    from icibenefit.pipeline.patches import tumour_patch
    from icibenefit.pipeline.radiomics_features import extract_radiomics
    from icibenefit.pipeline.segmentation import load_tumour_mask

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(THREADS)
    try:
        import torch

        from icibenefit.pipeline import deep

        torch.set_num_threads(THREADS)
        network: Any = deep.build_network(seed=0).eval()
    except ImportError:
        deep, network = None, None  # type: ignore[assignment]
    imports = time.perf_counter() - started
    normalizer = IntensityNormalizer().fit(np.array([-1000.0, -800.0, -50.0, 40.0, 600.0]))

    every = list(extract_radiomics(*_tiny_case(), normalizer))
    subset = every[:: max(1, len(every) // ROBUST_SUBSET)][:ROBUST_SUBSET]
    passes = []
    for _ in range(2):
        times: dict[str, float] = {}
        cpu_started = time.process_time()
        t = time.perf_counter()
        ct = load_ct_volume(ct_files)
        times["ct volume"] = time.perf_counter() - t
        t = time.perf_counter()
        mask = load_tumour_mask(segmentation, ct)
        times["mask"] = time.perf_counter() - t
        t = time.perf_counter()
        extract_radiomics(ct.image, mask.mask, normalizer, feature_names=subset)
        times["radiomics subset"] = time.perf_counter() - t
        t = time.perf_counter()
        patch = tumour_patch(ct.image, mask.mask, normalizer)
        times["patch"] = time.perf_counter() - t
        if network is not None:
            t = time.perf_counter()
            deep.extract_deep_features(network, patch.image[None], batch_size=1)
            times["deep"] = time.perf_counter() - t
        times["total"] = sum(times.values())
        times["cpu (all threads)"] = time.process_time() - cpu_started
        t = time.perf_counter()
        features = extract_radiomics(ct.image, mask.mask, normalizer)
        times["radiomics all (training)"] = time.perf_counter() - t
        passes.append(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    results.put(
        {
            "imports": imports,
            "passes": passes,
            "peak_mb": peak_mb,
            "n_features": len(features),
            "size": ct.image.GetSize(),
            "voxels": mask.voxel_count,
        }
    )


def _tiny_case() -> tuple[Any, Any]:
    """A small image and mask, only to list the feature names the parameters produce."""
    import numpy as np
    import SimpleITK as sitk

    array = np.random.default_rng(0).normal(0.0, 50.0, size=(8, 24, 24)).astype(np.float32)
    mask = np.zeros(array.shape, dtype=np.uint8)
    mask[2:6, 6:18, 6:18] = 1
    return sitk.GetImageFromArray(array), sitk.GetImageFromArray(mask)


def main() -> None:
    """Generate one ``full`` patient, extract its baseline features, print the measurements."""
    from icibenefit.synth import generate_cohort

    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        out = Path(tmp)
        t = time.perf_counter()
        manifest = generate_cohort(out, 1, 11, size="full")
        print(f"generated a full patient in {time.perf_counter() - t:.1f} s (not measured)")
        timepoint = next(
            tp for p in manifest.patients for tp in p.timepoints if tp.segmentation is not None
        )
        assert timepoint.segmentation is not None
        ct_files = sorted(str(p) for p in (out / timepoint.ct_dir).glob("*.dcm"))
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        worker = context.Process(
            target=_measure, args=(ct_files, str(out / timepoint.segmentation.path), results)
        )
        worker.start()
        report = results.get(timeout=900)
        worker.join()

    print(
        f"CT {report['size']} ({timepoint.segmentation.kind}), tumour {report['voxels']} voxels "
        f"({timepoint.tumour_volume_ml:.1f} ml), {report['n_features']} radiomics features, "
        f"{THREADS} threads"
    )
    print(f"imports (once per worker): {report['imports']:.2f} s")
    for name, times in zip(("cold", "warm"), report["passes"], strict=True):
        print(f"{name:5s} " + ", ".join(f"{stage} {value:.2f} s" for stage, value in times.items()))
    if "deep" not in report["passes"][0]:
        print("deep: icibenefit.pipeline.deep not importable, not measured")
    warm_total = report["passes"][1]["total"]
    print(
        f"per timepoint (warm): {warm_total:.2f} s (target < {TARGET_SECONDS:g} s: "
        f"{'met' if warm_total < TARGET_SECONDS else 'MISSED'}); "
        f"peak memory {report['peak_mb']:.0f} MB (target < {TARGET_PEAK_MB:g} MB: "
        f"{'met' if report['peak_mb'] < TARGET_PEAK_MB else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
