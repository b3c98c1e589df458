"""``icibenefit serve`` on the real job path with a stand-in model, and helpers to drive it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.listener.dicom_factory import CtSeries
from tests.integration.listener.server import ListenerProcess, listener_settings, storescu

HERE = Path(__file__).resolve().parent
PATIENT_ID = "PAGE-PAT-3141"
PATIENT_NAME = "Tester^Paula"
KEY = "status-page-test-key"


def start_page_service(tmp_path: Path) -> ListenerProcess:
    """Start ``icibenefit serve`` with the page processor and a one-patient FHIR folder."""
    fhir = tmp_path / "fhir"
    fhir.mkdir()
    patient = {
        "resourceType": "Patient",
        "id": "page-patient",
        "identifier": [{"system": "urn:test", "value": PATIENT_ID}],
        "name": [{"family": "Tester", "given": ["Paula"]}],
        "gender": "female",
        "birthDate": "1958-04-01",
    }
    (fhir / "Patient.ndjson").write_text(json.dumps(patient) + "\n")
    starts = tmp_path / "treatment-start.csv"
    starts.write_text(f"patient_id,treatment_start\n{PATIENT_ID},2024-02-01\n")
    workdir = tmp_path / "service"
    workdir.mkdir()
    settings = listener_settings(
        workdir,
        job_processor="page_processor:build",
        job_max_attempts=1,
        pseudonym_key=KEY,
        fhir_ndjson_dir=fhir,
        treatment_start_file=starts,
    )
    return ListenerProcess(workdir, settings, {"PYTHONPATH": str(HERE)}).start()


def send(service: ListenerProcess, ct: CtSeries) -> None:
    """C-STORE the series with dcmtk's storescu (calling AE ``TESTSCU``)."""
    result = storescu(service.port, ct.files)
    assert result.returncode == 0, result.stderr


def job_of(service: ListenerProcess, study_uid: str, state: str) -> dict[str, Any] | None:
    """The study's job in ``state``, from the status API, or ``None``."""
    jobs = [j for j in service.get("/jobs") if j["study_uid"] == study_uid]
    return next((j for j in jobs if j["state"] == state), None)


def outbox_empty(service: ListenerProcess) -> bool:
    """Every queued report delivered (a done job has queued its reports already)."""
    return "icibenefit_outbox_depth 0\n" in service.metrics()
