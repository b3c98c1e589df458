"""``icibenefit train`` wall time on the 264-patient small cohort with precomputed features.

Generates the cohort (seed 1) into ``ICIBENEFIT_BENCH_DIR`` (default
``/tmp/icibenefit-bench``) unless present, runs ``train`` once to fill the
feature cache (also the cached CNN pretraining), then times a second ``train``
with the default trials: that second run is "with precomputed features".
Target: under 20 minutes on 2 cores.  Also prints the acceptance numbers:
test AUC of the longitudinal ensemble vs the baseline clinical model and the
DeLong p of that comparison, per endpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

TARGET_SECONDS = 20 * 60
PATIENTS = 264
SEED = 1


def _cohort(root: Path) -> Path:
    from icibenefit.synth import generate_cohort

    cohort = root / f"cohort-{PATIENTS}-seed{SEED}"
    if not (cohort / "manifest.json").is_file():
        shutil.rmtree(cohort, ignore_errors=True)
        generate_cohort(cohort, PATIENTS, SEED)
    return cohort


def _train(cohort: Path, out: Path) -> float:
    from icibenefit.training.trainer import train

    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".report"), ignore_errors=True)
    started = time.perf_counter()
    train(cohort, out, "farina2023", None, 0, cache_dir=cohort.parent / "cache")
    return time.perf_counter() - started


def main() -> None:
    """Print the timed run's wall time and the ensemble-vs-clinical comparison."""
    root = Path(os.environ.get("ICIBENEFIT_BENCH_DIR", "/tmp/icibenefit-bench"))
    root.mkdir(parents=True, exist_ok=True)
    cohort = _cohort(root)
    cold = _train(cohort, root / "bundle-cold")
    warm = _train(cohort, root / "bundle")
    verdict = "OK" if warm < TARGET_SECONDS else "OVER TARGET"
    print(f"train, cold cache (features extracted): {cold / 60:.1f} min")
    print(f"train, precomputed features: {warm / 60:.1f} min (target < 20 min) {verdict}")
    metrics = json.loads((root / "bundle.report" / "metrics.json").read_text())
    for endpoint, entry in metrics.items():
        models = entry["models"]
        clinical = models.get("clinical-baseline", {}).get("auc")
        for name, values in models.items():
            if name.startswith("ensemble-longitudinal"):
                print(
                    f"{endpoint}: {name} test AUC {values['auc']} vs clinical-baseline {clinical}"
                )
        for pair in entry["delong"]:
            print(f"{endpoint}: DeLong {pair['a']} vs {pair['b']}: p = {pair['p']}")


if __name__ == "__main__":
    main()
