from __future__ import annotations

import time
from pathlib import Path

import pytest

from icibenefit.errors import ConfigurationError
from icibenefit.listener.jobs import (
    RECORDING_FACTORY,
    RecordingProcessor,
    load_processor_factory,
    resolve_processor_factory,
)
from icibenefit.listener.store import DicomStore
from icibenefit.persistence import index
from icibenefit.persistence.jobs import JobContext, JobQueue, StudyIndex, backoff
from icibenefit.persistence.outbox import Outbox
from tests.integration.listener.dicom_factory import receive, write_ct_series


@pytest.fixture
def setup(make_settings, tmp_path: Path):
    settings = make_settings(study_quiet_seconds=5, job_max_attempts=3, retry_base_seconds=2)
    store = DicomStore(settings)
    conn = index.connect(settings.data_dir)
    return settings, store, conn, JobQueue(conn, settings), tmp_path


def test_job_only_after_quiet_period_and_once(setup) -> None:
    _settings, store, _conn, queue, tmp = setup
    ct = write_ct_series(tmp / "ct", 3)
    receive(store, ct.files)
    now = time.time()
    assert queue.enqueue_stable_studies(now + 1) == []
    created = queue.enqueue_stable_studies(now + 6)
    assert len(created) == 1
    assert queue.enqueue_stable_studies(now + 60) == []
    job = queue.claim(worker_pid=1, now=now + 6)
    assert job is not None
    assert (job.study_uid, job.version, job.attempts) == (ct.study_uid, 1, 1)
    assert queue.claim(worker_pid=2, now=now + 6) is None


def test_late_instance_after_processing_makes_version_two(setup) -> None:
    _settings, store, conn, queue, tmp = setup
    ct = write_ct_series(tmp / "ct", 3)
    receive(store, ct.files[:2])
    queue.enqueue_stable_studies(time.time() + 10)
    job = queue.claim(1, time.time() + 10)
    assert job is not None
    receive(store, ct.files[2:])  # arrives while version 1 runs
    assert queue.enqueue_stable_studies(time.time() + 20) == []  # one job per study at a time
    queue.complete(job)
    created = queue.enqueue_stable_studies(time.time() + 20)
    assert len(created) == 1
    versions = [r[0] for r in conn.execute("SELECT version FROM jobs ORDER BY id")]
    assert versions == [1, 2]


def test_failures_back_off_exponentially_then_die(setup) -> None:
    _settings, store, conn, queue, tmp = setup
    receive(store, write_ct_series(tmp / "ct", 1).files)
    t0 = time.time() + 10
    queue.enqueue_stable_studies(t0)
    delays = []
    now = t0
    for attempt in range(1, 4):
        job = queue.claim(1, now)
        assert job is not None
        assert job.attempts == attempt
        state = queue.fail(job, "boom", now)
        due = conn.execute("SELECT next_attempt_at FROM jobs").fetchone()[0]
        delays.append(due - now)
        assert queue.claim(1, now) is None  # not due yet
        now = due
        assert state == ("dead" if attempt == 3 else "failed")
    assert delays[:2] == pytest.approx([2.0, 4.0])
    assert queue.claim(1, now + 1e6) is None  # dead jobs are never claimed
    assert queue.retry([1]) == 1
    job = queue.claim(1, time.time())
    assert job is not None
    assert job.attempts == 1


def test_running_jobs_are_requeued_on_start(setup) -> None:
    _settings, store, _conn, queue, tmp = setup
    receive(store, write_ct_series(tmp / "ct", 1).files)
    queue.enqueue_stable_studies(time.time() + 10)
    assert queue.claim(1, time.time() + 10) is not None
    assert queue.counts()["running"] == 1
    assert queue.requeue_running() == 1
    assert queue.counts() == {"queued": 1, "running": 0, "done": 0, "failed": 0, "dead": 0}


def test_job_that_keeps_killing_its_process_ends_dead(setup) -> None:
    settings, store, _conn, queue, tmp = setup
    receive(store, write_ct_series(tmp / "ct", 1).files)
    queue.enqueue_stable_studies(time.time() + 10)
    for attempt in range(1, settings.job_max_attempts + 1):
        job = queue.claim(worker_pid=100 + attempt, now=time.time() + 10)
        assert job is not None
        assert job.attempts == attempt
        assert queue.requeue_running(worker_pid=999) == 0  # another worker's death
        assert queue.requeue_running(worker_pid=100 + attempt) == 1
    assert queue.counts()["dead"] == 1
    assert queue.claim(worker_pid=1, now=time.time() + 1e6) is None


def test_backoff_is_capped() -> None:
    assert backoff(1.0, 1) == 1.0
    assert backoff(1.0, 4) == 8.0
    assert backoff(1.0, 50) == 3600.0


def test_study_index_and_recording_processor(setup) -> None:
    settings, store, conn, queue, tmp = setup
    baseline = write_ct_series(tmp / "b", 2, seed=1)
    followup = write_ct_series(tmp / "f", 3, seed=2)
    other = write_ct_series(tmp / "o", 1, seed=3, patient_id="SOMEONE-ELSE")
    for series in (baseline, followup, other):
        receive(store, series.files)
    study_index = StudyIndex(conn)
    assert len(study_index.instances(followup.study_uid)) == 3
    assert all(r.path.is_file() for r in study_index.instances(followup.study_uid))
    studies = study_index.patient_studies(followup.study_uid)
    assert {s.study_uid for s in studies} == {baseline.study_uid, followup.study_uid}
    queue.enqueue_stable_studies(time.time() + 10)
    job = queue.claim(1, time.time() + 10)
    assert job is not None
    context = JobContext(
        settings,
        job.id,
        job.study_uid,
        job.version,
        job.attempts,
        study_index,
        Outbox(conn, settings),
    )
    processor = RecordingProcessor(settings)
    processor.process(context)
    processor.process(context)  # idempotent per job
    rows = conn.execute("SELECT job_id, study_uid, instances FROM processed").fetchall()
    assert [tuple(r) for r in rows] == [
        (job.id, job.study_uid, len(study_index.instances(job.study_uid)))
    ]


def test_processor_factory_resolution(make_settings) -> None:
    assert resolve_processor_factory(make_settings(job_processor="a.b:c")) == "a.b:c"
    default = resolve_processor_factory(make_settings())
    assert default in (RECORDING_FACTORY, "icibenefit.reporting.processor:build_processor")
    assert callable(load_processor_factory(RECORDING_FACTORY))
    with pytest.raises(ConfigurationError, match="job_processor"):
        load_processor_factory("icibenefit.listener.jobs:no_such_factory")
