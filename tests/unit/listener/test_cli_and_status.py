from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from icibenefit.cli import app
from icibenefit.listener.scp import ScpCounters
from icibenefit.listener.status_api import render_metrics
from icibenefit.listener.store import DicomStore
from icibenefit.persistence import index
from icibenefit.persistence.jobs import JobQueue
from tests.integration.listener.dicom_factory import (
    PATIENT_ID,
    PATIENT_NAME,
    receive,
    write_ct_series,
)


def _populate(settings, tmp_path: Path) -> str:
    store = DicomStore(settings)
    ct = write_ct_series(tmp_path / "ct", 2)
    receive(store, ct.files, calling_ae="A")
    return ct.study_uid


def test_studies_and_jobs_json(make_settings, tmp_path: Path, monkeypatch) -> None:
    settings = make_settings(job_max_attempts=1)
    study_uid = _populate(settings, tmp_path)
    conn = index.connect(settings.data_dir)
    queue = JobQueue(conn, settings)
    queue.enqueue_stable_studies(time.time() + 1e3)
    job = queue.claim(1, time.time() + 1e3)
    assert job is not None
    queue.fail(job, "boom")
    monkeypatch.setenv("ICIBENEFIT_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    result = runner.invoke(app, ["studies", "list", "--json"])
    assert result.exit_code == 0, result.output
    studies = json.loads(result.output)
    assert studies[0]["study_uid"] == study_uid
    assert studies[0]["instances"] == 2
    assert studies[0]["state"] == "dead"
    assert studies[0]["patient_id_hash"].startswith("p-")
    assert PATIENT_ID not in result.output
    assert PATIENT_NAME not in result.output
    jobs = json.loads(runner.invoke(app, ["jobs", "list", "--json"]).output)
    assert {k: jobs[0][k] for k in ("id", "study_uid", "state", "attempts")} == {
        "id": job.id,
        "study_uid": study_uid,
        "state": "dead",
        "attempts": 1,
    }
    result = runner.invoke(app, ["jobs", "retry", str(job.id)])
    assert result.exit_code == 0
    assert "re-queued 1" in result.output
    assert queue.counts()["queued"] == 1
    assert runner.invoke(app, ["jobs", "retry", "999"]).exit_code == 1
    assert runner.invoke(app, ["jobs", "list", "--state", "bogus"]).exit_code == 2
    table = runner.invoke(app, ["jobs", "list"])
    assert table.exit_code == 0
    assert "queued" in table.output


def test_metrics_text(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    _populate(settings, tmp_path)
    conn = index.connect(settings.data_dir)
    queue = JobQueue(conn, settings)
    queue.enqueue_stable_studies(time.time() + 1e3)
    job = queue.claim(1, time.time() + 1e3)
    assert job is not None
    queue.complete(job)
    counters = ScpCounters()
    counters.add("instances_stored", 2)
    counters.add("rejections")
    text = render_metrics(conn, counters)
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines["icibenefit_instances_stored_total"] == "2"
    assert lines["icibenefit_rejections_total"] == "1"
    assert lines['icibenefit_jobs{state="done"}'] == "1"
    assert lines["icibenefit_outbox_depth"] == "0"
    assert lines['icibenefit_processing_latency_seconds_bucket{le="+Inf"}'] == "1"
    assert lines["icibenefit_processing_latency_seconds_count"] == "1"
    assert "# TYPE icibenefit_processing_latency_seconds histogram" in text
