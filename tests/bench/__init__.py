"""Benchmarks: performance targets live here, not in timed unit tests.

Run with ``make bench`` (``python -m tests.bench``).  Each ``bench_*.py`` module
exposes ``main() -> None`` that prints its measurements and its target.
"""
