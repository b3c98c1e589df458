"""dcmtk storescu -> icibenefit serve: acknowledged, durable, indexed, one job."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.integration.listener.dicom_factory import (
    PATIENT_ID,
    PATIENT_NAME,
    CtSeries,
    dataset_sha256,
    write_ct_series,
    write_seg,
)
from tests.integration.listener.server import (
    ICIBENEFIT,
    STORESCU_ENV,
    storescu,
    storescu_command,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def full_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[CtSeries, Path]:
    """A 300-slice 512 x 512 CT series (the size of the `full` cohort) and its SEG."""
    root = tmp_path_factory.mktemp("full")
    ct = write_ct_series(root / "ct", 300, size=512, seed=7)
    return ct, write_seg(ct, root / "seg.dcm")


def test_full_series_and_seg_are_stored_indexed_and_processed_once(
    start_listener, full_series: tuple[CtSeries, Path]
) -> None:
    ct, seg = full_series
    server = start_listener(allowed_calling_ae_titles=["TESTSCU"])
    sent = [*ct.files, seg]
    result = storescu(server.port, sent, verbose=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Received Store Response (Success)") == len(sent)

    conn = sqlite3.connect(server.data_dir / "index.sqlite")
    conn.row_factory = sqlite3.Row
    rows = {r["sop_instance_uid"]: r for r in conn.execute("SELECT * FROM instances").fetchall()}
    assert len(rows) == len(sent)
    for path in sent:
        ds = dcmread(path, stop_before_pixels=True)
        row = rows[ds.SOPInstanceUID]
        stored = Path(row["path"])
        assert (
            stored
            == (server.data_dir / "dicom" / ds.StudyInstanceUID / ds.SeriesInstanceUID)
            / f"{ds.SOPInstanceUID}.dcm"
        )
        expected = dataset_sha256(path)
        assert row["sha256"] == expected
        assert dataset_sha256(stored) == expected
        assert row["modality"] == ds.Modality
        assert row["patient_id"] == PATIENT_ID
    assert {r["modality"] for r in rows.values()} == {"CT", "SEG"}

    server.wait_for(lambda: server.get("/jobs") and server.get("/jobs")[0]["state"] == "done")
    jobs = server.get("/jobs")
    assert [(j["study_uid"], j["version"]) for j in jobs] == [(ct.study_uid, 1)]
    processed = conn.execute("SELECT study_uid, instances FROM processed").fetchall()
    assert [tuple(r) for r in processed] == [(ct.study_uid, len(sent))]

    env = {"ICIBENEFIT_DATA_DIR": str(server.data_dir), "PATH": "/usr/bin:/bin"}
    listing = subprocess.run(
        [ICIBENEFIT, "studies", "list", "--json"], capture_output=True, text=True, env=env
    )
    studies = json.loads(listing.stdout)
    assert [(s["study_uid"], s["instances"], s["state"]) for s in studies] == [
        (ct.study_uid, len(sent), "done")
    ]
    assert studies[0]["patient_id_hash"].startswith("p-")
    metrics = server.metrics()
    assert f"icibenefit_instances_stored_total {len(sent)}" in metrics
    assert 'icibenefit_jobs{state="done"} 1' in metrics
    for text in (server.log(), listing.stdout, metrics, json.dumps(server.get("/studies"))):
        assert PATIENT_ID not in text
        assert PATIENT_NAME.split("^")[0] not in text


def test_resent_identical_study_creates_no_new_job_but_new_instances_do(
    start_listener, tmp_path: Path
) -> None:
    server = start_listener()
    ct = write_ct_series(tmp_path / "ct", 6)
    assert storescu(server.port, ct.files[:4]).returncode == 0
    server.wait_for(lambda: [j["state"] for j in server.get("/jobs")] == ["done"])
    assert storescu(server.port, ct.files[:4]).returncode == 0  # identical duplicates
    assert storescu(server.port, ct.files[4:]).returncode == 0  # late instances
    server.wait_for(lambda: [j["state"] for j in server.get("/jobs")] == ["done", "done"])
    jobs = server.get("/jobs")
    assert [j["version"] for j in jobs] == [2, 1]
    assert "icibenefit_instances_duplicate_total 4" in server.metrics()


def test_sigterm_finishes_in_flight_association_and_exits_cleanly(
    start_listener, tmp_path: Path
) -> None:
    server = start_listener()
    ct = write_ct_series(tmp_path / "ct", 120, size=128)
    sender = subprocess.Popen(
        storescu_command(server.port, ct.files, verbose=True),
        stderr=subprocess.PIPE,
        text=True,
        env=STORESCU_ENV,
    )
    server.wait_for(lambda: "icibenefit_instances_stored_total 0" not in server.metrics(), 30, 0.01)
    assert server.terminate() == 0
    _, stderr = sender.communicate(timeout=60)
    assert sender.returncode == 0
    assert stderr.count("Received Store Response (Success)") == len(ct.files)
    conn = sqlite3.connect(server.data_dir / "index.sqlite")
    assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == len(ct.files)
    assert "listener stopped" in server.log()
