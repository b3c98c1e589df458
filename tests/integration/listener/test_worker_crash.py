"""A worker process that dies mid-job is replaced; its job is retried, not lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.integration.listener.dicom_factory import write_ct_series
from tests.integration.listener.server import echoscu, storescu

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


def test_dead_worker_is_replaced_and_its_job_retried(start_listener, tmp_path: Path) -> None:
    server = start_listener(
        extra_env={"PYTHONPATH": str(HERE)}, job_processor="crash_processor:build", workers=1
    )
    ct = write_ct_series(tmp_path / "ct", 3)
    assert storescu(server.port, ct.files).returncode == 0
    server.wait_for(lambda: [j["state"] for j in server.get("/jobs")] == ["done"], timeout=60)
    job = server.get("/jobs")[0]
    assert job["attempts"] == 2
    assert "exited with 70; starting another" in server.log()
    conn = sqlite3.connect(server.data_dir / "index.sqlite")
    assert conn.execute("SELECT study_uid FROM processed").fetchall() == [(ct.study_uid,)]
    assert echoscu(server.port).returncode == 0  # the SCP never noticed
