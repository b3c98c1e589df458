"""Run every benchmark module's ``main()`` (``python -m tests.bench [name ...]``)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(selected: list[str]) -> int:
    """Run the selected benchmarks (all when none are named); return an exit status."""
    package_dir = Path(__file__).parent
    names = sorted(
        m.name for m in pkgutil.iter_modules([str(package_dir)]) if m.name.startswith("bench_")
    )
    if selected:
        names = [n for n in names if n in selected or n.removeprefix("bench_") in selected]
    failures = 0
    for name in names:
        print(f"=== {name}", flush=True)
        started = time.perf_counter()
        try:
            importlib.import_module(f"tests.bench.{name}").main()
        except Exception as exc:  # a failing benchmark must not hide the others
            failures += 1
            print(f"!!! {name} failed: {exc!r}", flush=True)
        print(f"=== {name} done in {time.perf_counter() - started:.1f} s\n", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
