"""Synthetic cohort generation time (issue 2: 40 small patients in < 60 s on 2 cores)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from icibenefit.synth import generate_cohort

SMALL_TARGET_SECONDS = 60.0


def _timed(out: Path, patients: int, size: str) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    generate_cohort(out, patients, 1, size="full" if size == "full" else "small")
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    """Time a 40-patient small cohort (the target) and one full-size patient (for reference)."""
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        wall, cpu = _timed(Path(tmp) / "small", 40, "small")
        print(
            f"small, 40 patients: {wall:.1f} s wall, {cpu:.1f} s CPU "
            f"(target < {SMALL_TARGET_SECONDS:g} s)"
        )
        wall_full, cpu_full = _timed(Path(tmp) / "full", 1, "full")
        print(f"full, 1 patient: {wall_full:.1f} s wall, {cpu_full:.1f} s CPU")
    if wall > SMALL_TARGET_SECONDS:
        raise AssertionError(f"40 small patients took {wall:.1f} s > {SMALL_TARGET_SECONDS:g} s")
