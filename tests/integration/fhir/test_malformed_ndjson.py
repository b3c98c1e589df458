"""A malformed NDJSON line costs only its own resources (issue 18 point 7)."""

import json
import logging
import shutil

import pytest

from icibenefit import audit
from icibenefit.fhir import NdjsonReader, ReaderClinicalSource
from icibenefit.settings import Settings

pytestmark = pytest.mark.integration


def test_bad_lines_are_skipped_reported_and_affect_only_their_resources(
    small_cohort, ground_truth, tmp_path, caplog
):
    folder = tmp_path / "fhir"
    shutil.copytree(small_cohort / "fhir", folder)
    observations = folder / "Observation.ndjson"
    lines = observations.read_bytes().splitlines(keepends=True)
    cut = json.loads(lines[0])
    victim = cut["subject"]["reference"]
    lines[0] = lines[0][: len(lines[0]) // 2] + b"\n"  # cut short: not JSON
    lines.insert(3, b"this is not json\n")
    lines.insert(5, b"\xff\xfe not utf-8\n")
    lines.insert(7, b"[1, 2, 3]\n")
    observations.write_bytes(b"".join(lines))

    caplog.set_level(logging.WARNING)
    with audit.configured(Settings(data_dir=tmp_path / "data")) as log:
        reader = NdjsonReader(folder)
        entries = [e for e in log.entries() if e["event"] == "fhir_line_skipped"]
    assert [(s.file, s.line) for s in reader.skipped] == [
        ("Observation.ndjson", 1),
        ("Observation.ndjson", 4),
        ("Observation.ndjson", 6),
        ("Observation.ndjson", 8),
    ]
    assert [e["details"]["line"] for e in entries] == [1, 4, 6, 8]
    assert caplog.text.count("skipped FHIR NDJSON Observation.ndjson line") == 4

    source = ReaderClinicalSource(reader, pseudonym_key="site-key")
    affected = 0
    for patient_id, truth in ground_truth.items():
        record = source.clinical_record(patient_id)  # no patient's job fails
        patient = reader.patients_by_identifier(patient_id, None)[0]
        if f"Patient/{patient['id']}" == victim:
            affected += 1
        else:
            assert record == truth, patient_id
    assert affected == 1
