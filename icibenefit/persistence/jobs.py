"""Study completion, the job queue, and what a processor reads of the index.

Life of a study
---------------
Every stored instance marks its study ``pending`` and stamps
``last_received_at``.  :meth:`JobQueue.enqueue_stable_studies` (called every
few hundred milliseconds by the service) turns each pending study that has
been quiet for ``study_quiet_seconds`` and has no queued/running job into a
new job with the next ``version`` and clears ``pending``, all in one
transaction.  Instances that arrive after (or during) processing set
``pending`` again, so the study gets version 2, 3... once quiet again.

Job states: ``queued`` -> ``running`` -> ``done``; a failing attempt becomes
``failed`` with ``next_attempt_at = now + retry_base_seconds * 2**(attempts-1)``
and is claimed again when due; after ``job_max_attempts`` attempts it is
``dead`` (audited as ``job_dead``; ``icibenefit jobs retry`` re-queues it).
``running`` jobs found at start-up belonged to a process that died and are
re-queued.

:class:`JobContext` is what a worker hands the processor for one attempt
(the seam itself, ``StudyProcessor``, is the listener's: :mod:`icibenefit.listener.jobs`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from icibenefit import audit
from icibenefit.persistence import queries
from icibenefit.persistence.outbox import AUDIT_ERROR_CHARS, Outbox
from icibenefit.settings import Settings

JOB_STATES = ("queued", "running", "done", "failed", "dead")
MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True)
class InstanceRecord:
    """One indexed instance, as the processor sees it."""

    sop_instance_uid: str
    series_uid: str
    sop_class_uid: str
    modality: str
    path: Path


@dataclass(frozen=True)
class StudyRecord:
    """One indexed study (``patient_id`` is clear text: the processor needs it)."""

    study_uid: str
    patient_id: str
    patient_id_hash: str
    study_date: str
    instances: int


class StudyIndex:
    """Read access to the instance index for processors."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def study(self, study_uid: str) -> StudyRecord:
        """The study row; ``KeyError`` if it was never received."""
        row = self._conn.execute(
            "SELECT study_uid, patient_id, patient_id_hash, study_date, instances"
            " FROM studies WHERE study_uid = ?",
            (study_uid,),
        ).fetchone()
        if row is None:
            raise KeyError(study_uid)
        return StudyRecord(**dict(row))

    def instances(self, study_uid: str) -> list[InstanceRecord]:
        """Every instance of the study, ordered by series then SOP Instance UID."""
        rows = self._conn.execute(
            "SELECT sop_instance_uid, series_uid, sop_class_uid, modality, path FROM instances"
            " WHERE study_uid = ? ORDER BY series_uid, sop_instance_uid",
            (study_uid,),
        ).fetchall()
        return [InstanceRecord(**{**dict(row), "path": Path(row["path"])}) for row in rows]

    def patient_studies(self, study_uid: str) -> list[StudyRecord]:
        """All studies of the patient of ``study_uid`` (itself included), oldest first.

        The pipeline needs the baseline and the follow-ups, which arrive as
        separate studies of one patient.
        """
        patient_id = self.study(study_uid).patient_id
        rows = self._conn.execute(
            "SELECT study_uid, patient_id, patient_id_hash, study_date, instances FROM studies"
            " WHERE patient_id = ? ORDER BY study_date, first_received_at",
            (patient_id,),
        ).fetchall()
        return [StudyRecord(**dict(row)) for row in rows]


@dataclass(frozen=True)
class JobContext:
    """Everything a processor gets for one attempt of one job."""

    settings: Settings
    job_id: int
    study_uid: str
    version: int
    attempt: int
    index: StudyIndex
    outbox: Outbox


def record_processed(conn: sqlite3.Connection, job: JobContext) -> None:
    """Insert one ``processed`` row per job (idempotent on the job id)."""
    conn.execute(
        "INSERT OR IGNORE INTO processed (job_id, study_uid, version, instances,"
        " processed_at) VALUES (?, ?, ?, ?, ?)",
        (
            job.job_id,
            job.study_uid,
            job.version,
            len(job.index.instances(job.study_uid)),
            time.time(),
        ),
    )


@dataclass(frozen=True)
class Job:
    """A claimed job."""

    id: int
    study_uid: str
    version: int
    attempts: int


class JobQueue:
    """The job table: enqueue stable studies, claim, finish, retry."""

    def __init__(self, conn: sqlite3.Connection, settings: Settings) -> None:
        self._conn = conn
        self._settings = settings

    def enqueue_stable_studies(self, now: float | None = None) -> list[int]:
        """Create one job per pending study quiet for long enough; return job ids."""
        now = time.time() if now is None else now
        cutoff = now - self._settings.study_quiet_seconds
        created = []
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(
                "SELECT study_uid, version, patient_id FROM studies s WHERE pending = 1"
                " AND last_received_at <= ? AND NOT EXISTS (SELECT 1 FROM jobs j"
                " WHERE j.study_uid = s.study_uid AND j.state IN ('queued', 'running', 'failed'))",
                (cutoff,),
            ).fetchall()
            for row in rows:
                version = row["version"] + 1
                cursor = conn.execute(
                    "INSERT INTO jobs (study_uid, version, state, next_attempt_at, created_at)"
                    " VALUES (?, ?, 'queued', ?, ?)",
                    (row["study_uid"], version, now, now),
                )
                conn.execute(
                    "UPDATE studies SET pending = 0, version = ? WHERE study_uid = ?",
                    (version, row["study_uid"]),
                )
                created.append(int(cursor.lastrowid or 0))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        for row, job_id in zip(rows, created, strict=True):
            audit.record(
                "study_stable",
                component="listener.scheduler",
                outcome="queued",
                patient_id=row["patient_id"],
                study_uid=row["study_uid"],
                details={"job": job_id, "version": row["version"] + 1},
            )
        return created

    def requeue_running(self, worker_pid: int | None = None) -> int:
        """Return jobs left ``running`` by a dead process (any, or one worker) to the queue.

        The interrupted attempt was counted at claim time, so a job whose
        processing kills its process again and again ends ``dead`` after
        ``job_max_attempts`` instead of crash-looping the service.
        """
        where = "state = 'running'" + (" AND worker_pid = ?" if worker_pid is not None else "")
        params = () if worker_pid is None else (worker_pid,)
        rows = self._conn.execute(
            "UPDATE jobs SET state = CASE WHEN attempts >= ? THEN 'dead' ELSE 'queued' END,"
            " last_error = CASE WHEN attempts >= ? THEN 'process died during every attempt'"
            f" ELSE last_error END, worker_pid = NULL WHERE {where} RETURNING {_DEAD_JOB_FIELDS}",
            (self._settings.job_max_attempts, self._settings.job_max_attempts, *params),
        ).fetchall()
        for row in rows:
            if row["state"] == "dead":
                _audit_dead(row)
        return len(rows)

    def claim(self, worker_pid: int, now: float | None = None) -> Job | None:
        """Atomically take the oldest due job, counting the attempt."""
        now = time.time() if now is None else now
        row = self._conn.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?,"
            " worker_pid = ? WHERE id = (SELECT id FROM jobs WHERE state IN ('queued', 'failed')"
            " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT 1)"
            " RETURNING id, study_uid, version, attempts",
            (now, worker_pid, now),
        ).fetchone()
        return None if row is None else Job(**dict(row))

    def complete(self, job: Job) -> None:
        """Mark a job done."""
        self._conn.execute(
            "UPDATE jobs SET state = 'done', finished_at = ?, last_error = NULL WHERE id = ?",
            (time.time(), job.id),
        )

    def fail(self, job: Job, error: str, now: float | None = None) -> str:
        """Record a failed attempt; return the new state (``failed`` or ``dead``)."""
        now = time.time() if now is None else now
        if job.attempts >= self._settings.job_max_attempts:
            state, due = "dead", now
        else:
            state, due = "failed", now + backoff(self._settings.retry_base_seconds, job.attempts)
        row = self._conn.execute(
            "UPDATE jobs SET state = ?, next_attempt_at = ?, finished_at = ?, last_error = ?"
            f" WHERE id = ? RETURNING {_DEAD_JOB_FIELDS}",
            (state, due, now, error[:2000], job.id),
        ).fetchone()
        if state == "dead" and row is not None:
            _audit_dead(row)
        return state

    def retry(self, job_ids: list[int]) -> int:
        """Re-queue failed or dead jobs now, with a fresh attempt budget."""
        total = 0
        for job_id in job_ids:
            cursor = self._conn.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, next_attempt_at = ?"
                " WHERE id = ? AND state IN ('failed', 'dead')",
                (time.time(), job_id),
            )
            total += cursor.rowcount
        return total

    def dead_ids(self) -> list[int]:
        """Ids of every dead job (``icibenefit jobs retry --all-dead``)."""
        rows = self._conn.execute("SELECT id FROM jobs WHERE state = 'dead'")
        return [int(row[0]) for row in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs per state (every state present, zero included)."""
        return queries.count_by_state(self._conn, "jobs", JOB_STATES)


_DEAD_JOB_FIELDS = (
    "id, study_uid, version, state, attempts, last_error, (SELECT patient_id FROM studies"
    " WHERE studies.study_uid = jobs.study_uid) AS patient_id"
)


def _audit_dead(row: sqlite3.Row) -> None:
    """Record a job given up (the row of :data:`_DEAD_JOB_FIELDS`).

    The error is the processor's exception text; the audit log replaces the
    patient's identifier in it by the pseudonym.
    """
    audit.record(
        "job_dead",
        component="listener.jobs",
        outcome="dead",
        patient_id=row["patient_id"],
        study_uid=row["study_uid"],
        details={
            "job": row["id"],
            "version": row["version"],
            "attempts": row["attempts"],
            "error": (row["last_error"] or "")[:AUDIT_ERROR_CHARS],
        },
    )


def backoff(base_seconds: float, attempts: int) -> float:
    """Delay before the next attempt after ``attempts`` failures: base * 2**(n-1), capped."""
    return float(min(base_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))
