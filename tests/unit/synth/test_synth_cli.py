"""``icibenefit synth cohort`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from icibenefit.cli import app
from icibenefit.synth import load_manifest


def test_synth_cohort_writes_a_cohort(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    args = ["synth", "cohort", "--out", str(out), "--patients", "2", "--seed", "4"]
    result = CliRunner().invoke(
        app, [*args, "--signal", "0.5", "--identifier-system", "urn:oid:1.2.3.4"]
    )
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert (manifest.seed, manifest.size, manifest.signal) == (4, "small", 0.5)
    assert len(manifest.patients) == 2
    assert "wrote 2 patients" in result.output
    patient = json.loads((out / "fhir" / "Patient.ndjson").read_text().splitlines()[0])
    assert patient["identifier"][0]["system"] == "urn:oid:1.2.3.4"


def test_synth_cohort_rejects_bad_size_and_existing_cohort(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["synth", "cohort", "--out", str(tmp_path / "x"), "--size", "huge"])
    assert bad.exit_code == 2
    assert not (tmp_path / "x" / "manifest.json").exists()
    args = ["synth", "cohort", "--out", str(tmp_path / "y"), "--patients", "1"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 2
    # Rich wraps the message in a box: compare letters only.
    assert "alreadyholdsacohort" in "".join(c for c in again.output if c.isalnum())
