"""The generator's surgical history: valid Procedures, consistent with previous_surgery."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
from fhir.resources.R4B.procedure import Procedure

from icibenefit.synth import load_manifest
from icibenefit.synth.clinical import (
    THORACIC_PROCEDURES,
    draw_clinical,
    draw_procedures,
)
from icibenefit.synth.fhir_resources import PROCEDURE_CODES
from icibenefit.synth.outcomes import MONTH_DAYS, draw_course

SNOMED = "http://snomed.info/sct"
THORACIC_CODES = {PROCEDURE_CODES[kind][0] for kind in THORACIC_PROCEDURES}


def _procedures(cohort: Path) -> list[dict[str, Any]]:
    lines = (cohort / "fhir" / "Procedure.ndjson").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_procedures_are_valid_r4_and_precede_treatment_start(small_cohort: Path) -> None:
    patients = {
        f"Patient/{p.clinical_record.fhir_patient_id}": p
        for p in load_manifest(small_cohort).patients
    }
    procedures = _procedures(small_cohort)
    assert procedures
    assert len({p["id"] for p in procedures}) == len(procedures)
    for data in procedures:
        model = Procedure.model_validate(data)
        assert model.status == "completed"
        entry = patients[data["subject"]["reference"]]
        performed = dt.datetime.fromisoformat(data["performedDateTime"])
        assert performed.utcoffset() is not None
        assert performed.date() < entry.treatment_start
        (coding,) = data["code"]["coding"]
        assert coding["system"] == SNOMED


def test_previous_surgery_is_true_exactly_for_a_lung_resection(small_cohort: Path) -> None:
    by_subject: dict[str, set[str]] = {}
    for data in _procedures(small_cohort):
        codes = {c["code"] for c in data["code"]["coding"]}
        by_subject.setdefault(data["subject"]["reference"], set()).update(codes)
    flags = []
    for entry in load_manifest(small_cohort).patients:
        record = entry.clinical_record
        codes = by_subject.get(f"Patient/{record.fhir_patient_id}", set())
        assert record.previous_surgery is bool(codes & THORACIC_CODES), entry.patient_id
        flags.append(record.previous_surgery)
    # The shared fixture has both kinds of patient, and a non-thoracic distractor.
    assert set(flags) == {True, False}
    assert any(codes - THORACIC_CODES for codes in by_subject.values())


def test_csv_carries_previous_surgery(small_cohort: Path) -> None:
    with (small_cohort / "clinical.csv").open(newline="", encoding="utf-8") as handle:
        rows = {row["patient_id"]: row for row in csv.DictReader(handle)}
    for entry in load_manifest(small_cohort).patients:
        assert rows[entry.patient_id]["previous_surgery"] == str(
            entry.clinical_record.previous_surgery
        )


def test_share_and_timing_of_lung_resections() -> None:
    t0 = dt.date(2021, 6, 1)
    draws = [draw_procedures(np.random.default_rng([3, i, 5]), f"p{i}", t0) for i in range(2000)]
    resections = [p for draw in draws for p in draw if p.thoracic]
    share = sum(any(p.thoracic for p in draw) for draw in draws) / len(draws)
    assert abs(share - 0.14) < 0.03  # seed 1's cohort: 14% previous surgery
    months = [(t0 - p.performed.date()).days / MONTH_DAYS for p in resections]
    assert min(months) >= 6
    assert max(months) <= 60
    assert {p.kind for p in resections} == set(THORACIC_PROCEDURES)


def test_surgical_history_draws_no_numbers_from_the_clinical_stream() -> None:
    """So adding it left every other clinical value of a seeded cohort unchanged."""
    course = draw_course(np.random.default_rng(1), 1.0)
    t0 = dt.date(2021, 6, 1)
    resection = draw_procedures(np.random.default_rng([9, 2, 5]), "pat-x", t0)
    assert any(p.thoracic for p in resection)

    def record(procedures: tuple[Any, ...]) -> dict[str, Any]:
        draw = draw_clinical(np.random.default_rng(7), "X", "pat-x", t0, course, 1.0, procedures)
        return draw.record.model_dump()

    with_surgery, without = record(resection), record(())
    assert with_surgery.pop("previous_surgery") is True
    assert without.pop("previous_surgery") is False
    assert with_surgery == without
