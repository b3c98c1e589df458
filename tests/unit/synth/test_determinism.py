"""Same seed -> byte-identical cohort; another seed -> another cohort."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from icibenefit.synth import generate_cohort, load_manifest


def _generate(root: Path, n_patients: int, seed: int) -> Path:
    generate_cohort(root, n_patients, seed)
    return root


def _digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = _digest(_generate(tmp_path / "a", 4, 11))
    second = _digest(_generate(tmp_path / "b", 4, 11))
    assert len(first) > 50
    assert first == second


def test_other_seed_gives_other_cohort(tmp_path: Path) -> None:
    a = load_manifest(_generate(tmp_path / "a", 2, 11))
    b = load_manifest(_generate(tmp_path / "b", 2, 12))
    uids_a = {tp.study_uid for p in a.patients for tp in p.timepoints}
    uids_b = {tp.study_uid for p in b.patients for tp in p.timepoints}
    assert not uids_a & uids_b
    assert {p.patient_id for p in a.patients}.isdisjoint(p.patient_id for p in b.patients)


def test_patient_does_not_depend_on_cohort_size(tmp_path: Path) -> None:
    small = load_manifest(_generate(tmp_path / "a", 1, 5))
    large = load_manifest(_generate(tmp_path / "b", 3, 5))
    assert small.patients[0] == large.patients[0]


def test_refuses_to_overwrite_a_cohort_or_other_files(tmp_path: Path) -> None:
    generate_cohort(tmp_path / "cohort", 1, 1)
    with pytest.raises(FileExistsError, match="a cohort"):
        generate_cohort(tmp_path / "cohort", 1, 1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="files"):
        generate_cohort(tmp_path / "other", 1, 1)
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("n_patients", "seed", "signal"),
    [(0, 1, 1.0), (1, -1, 1.0), (1, 1, -0.5), (1, 1, float("nan"))],
)
def test_rejects_invalid_arguments(
    tmp_path: Path, n_patients: int, seed: int, signal: float
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the argument, checked below
        generate_cohort(tmp_path, n_patients, seed, signal=signal)
    assert not (tmp_path / "manifest.json").exists()
