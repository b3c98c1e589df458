"""``icibenefit demo`` from scratch (issue 6: within 5 minutes on a fresh machine).

Generates the demo patient and cohort, trains the demonstration bundle, runs
the service and prints the reports, in an empty data directory; then once more
on the same directory (everything reused).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 300.0
ICIBENEFIT = str(Path(sys.executable).with_name("icibenefit"))


def _timed_demo(data_dir: Path) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICIBENEFIT_")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    result = subprocess.run(
        [ICIBENEFIT, "demo", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise AssertionError(f"demo failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    """Time a first demo run (the target) and a second one reusing everything."""
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        wall, cpu = _timed_demo(Path(tmp) / "data")
        print(f"first run: {wall:.1f} s wall, {cpu:.1f} s CPU (target < {TARGET_SECONDS:g} s)")
        again, again_cpu = _timed_demo(Path(tmp) / "data")
        print(f"second run (reuse): {again:.1f} s wall, {again_cpu:.1f} s CPU")
    if wall > TARGET_SECONDS:
        raise AssertionError(f"the demo took {wall:.1f} s > {TARGET_SECONDS:g} s")
