"""A private FHIR server loaded once with the small synthetic cohort.

Private (not the shared ``fhir_server``) so that other areas resetting or
writing to the shared server cannot change what these tests read.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.fhir_server_fixture import FhirServer, start_fhir_server

from icibenefit.domain import ClinicalRecord


@pytest.fixture(scope="session")
def cohort_server(small_cohort: Path) -> Iterator[FhirServer]:
    with start_fhir_server(page_size=20) as server:
        server.load_ndjson(small_cohort)
        yield server


@pytest.fixture(scope="session")
def ground_truth(small_cohort: Path) -> dict[str, ClinicalRecord]:
    manifest = json.loads((small_cohort / "manifest.json").read_text())
    return {
        p["patient_id"]: ClinicalRecord.model_validate(p["clinical_record"])
        for p in manifest["patients"]
    }
