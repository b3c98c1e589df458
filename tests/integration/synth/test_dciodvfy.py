"""dicom3tools' dciodvfy finds no errors in the generated CT, SEG and RTSTRUCT."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from icibenefit.synth import load_manifest

pytestmark = pytest.mark.integration


def _errors(path: Path) -> list[str]:
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy is not None, "dciodvfy (dicom3tools) is required; `make test` installs it"
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    if result.returncode != 0 and not errors:
        errors.append(f"exit status {result.returncode}: {output.strip()}")
    return errors


def test_every_object_kind_validates(small_cohort: Path) -> None:
    checked: dict[str, int] = {"CT": 0, "SEG": 0, "RTSTRUCT": 0}
    problems: dict[str, list[str]] = {}
    for patient in load_manifest(small_cohort).patients:
        for tp in patient.timepoints:
            ct_files = sorted((small_cohort / tp.ct_dir).glob("*.dcm"), key=lambda p: int(p.stem))
            for path in (ct_files[0], ct_files[len(ct_files) // 2], ct_files[-1]):
                problems[str(path)] = _errors(path)
                checked["CT"] += 1
            if tp.segmentation is not None:
                path = small_cohort / tp.segmentation.path
                problems[str(path)] = _errors(path)
                checked[tp.segmentation.kind] += 1
    assert {name: errors for name, errors in problems.items() if errors} == {}
    assert min(checked.values()) > 0, checked


def test_full_size_series_validates(make_cohort) -> None:  # type: ignore[no-untyped-def]
    cohort = make_cohort(1, 3, "full")
    tp = load_manifest(cohort).patients[0].timepoints[0]
    assert tp.n_slices == 150
    ct = cohort / tp.ct_dir / "75.dcm"
    assert _errors(ct) == []
    assert tp.segmentation is not None
    assert _errors(cohort / tp.segmentation.path) == []
