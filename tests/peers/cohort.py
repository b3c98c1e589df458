"""Synthetic cohort fixtures (owned by the synth area).

``small_cohort`` is generated once per test session (12 patients, seed 9,
size small: ~650 small DICOM files, ~5 s of CPU) and shared read-only by
every test that needs DICOM, FHIR NDJSON or ground truth.  Tests must not
modify it; copy what you need to change.  Seed 9 was chosen because its 12
patients cover every case: 0, 1 and 2 follow-ups, SEG and RTSTRUCT patients
(indices 3, 7, 11), and a follow-up whose tumour vanished (no segmentation);
tests/unit/synth/test_cohort_layout.py keeps this true.
``make_cohort`` builds others (other sizes, seeds, signal strengths, survival
scales), cached per session by its arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

#: Parameters of the shared small cohort (documented so tests can rely on them).
SMALL_COHORT_PATIENTS = 12
SMALL_COHORT_SEED = 9


def generate(
    out_dir: Path,
    patients: int,
    seed: int,
    size: str = "small",
    signal: float | None = None,
    survival_scale: float | None = None,
) -> Path:
    """Generate a cohort into ``out_dir`` and return it (imports lazily: heavy deps)."""
    from icibenefit.synth import DEFAULT_SIGNAL, DEFAULT_SURVIVAL_SCALE, generate_cohort

    generate_cohort(
        out_dir,
        patients,
        seed,
        size="full" if size == "full" else "small",
        signal=DEFAULT_SIGNAL if signal is None else signal,
        survival_scale=DEFAULT_SURVIVAL_SCALE if survival_scale is None else survival_scale,
    )
    return out_dir


@pytest.fixture(scope="session")
def make_cohort(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Return ``build(patients, seed, size="small", signal=None, survival_scale=None) -> Path``.

    Cohorts are cached per session by the arguments.
    """
    cache: dict[tuple[int, int, str, float | None, float | None], Path] = {}

    def build(
        patients: int,
        seed: int,
        size: str = "small",
        signal: float | None = None,
        survival_scale: float | None = None,
    ) -> Path:
        key = (patients, seed, size, signal, survival_scale)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"cohort_{patients}p_seed{seed}_{size}")
            cache[key] = generate(out, patients, seed, size, signal, survival_scale)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def small_cohort(make_cohort: Callable[..., Path]) -> Path:
    """Directory of a small synthetic cohort (12 patients, seed 9); read-only."""
    return make_cohort(SMALL_COHORT_PATIENTS, SMALL_COHORT_SEED)
