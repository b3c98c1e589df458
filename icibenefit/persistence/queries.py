"""Read-only views of the index for the CLI, the status API and the demo (no PHI in clear).

Both ``icibenefit studies list --json`` and ``GET /studies`` return these
objects, so scripts can use either.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Literal


def count_by_state(
    conn: sqlite3.Connection, table: Literal["jobs", "outbox"], states: Sequence[str]
) -> dict[str, int]:
    """Rows of the job queue or the outbox per state, every state present (zero included)."""
    found = dict(conn.execute(f"SELECT state, count(*) FROM {table} GROUP BY state").fetchall())
    return {state: int(found.get(state, 0)) for state in states}


def list_studies(conn: sqlite3.Connection, limit: int = 1000) -> list[dict[str, Any]]:
    """Most recent studies first; ``state`` is ``receiving`` or the latest job's state.

    Each object: ``study_uid``, ``patient_id_hash``, ``study_date``, ``instances``,
    ``bytes``, ``state``, ``version``, ``last_received_at`` (epoch seconds).
    """
    rows = conn.execute(
        "SELECT s.study_uid, s.patient_id_hash, s.study_date, s.instances, s.bytes, s.pending,"
        " s.version, s.last_received_at, (SELECT j.state FROM jobs j"
        " WHERE j.study_uid = s.study_uid ORDER BY j.version DESC LIMIT 1) AS job_state"
        " FROM studies s ORDER BY s.last_received_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    studies = []
    for row in rows:
        item = dict(row)
        pending = item.pop("pending")
        job_state = item.pop("job_state")
        item["state"] = "receiving" if pending or job_state is None else job_state
        studies.append(item)
    return studies


def list_jobs(
    conn: sqlite3.Connection, state: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Most recent jobs first, optionally of one state.

    Each object: ``id``, ``study_uid``, ``version``, ``state``, ``attempts``,
    ``created_at``, ``started_at``, ``finished_at``, ``next_attempt_at``, ``last_error``.
    """
    where, params = ("WHERE state = ?", [state]) if state else ("", [])
    rows = conn.execute(
        "SELECT id, study_uid, version, state, attempts, created_at, started_at, finished_at,"
        f" next_attempt_at, last_error FROM jobs {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [dict(row) for row in rows]


def check(conn: sqlite3.Connection) -> None:
    """Raise ``sqlite3.Error`` unless the database answers (the health check)."""
    conn.execute("SELECT 1").fetchone()


def count_studies(conn: sqlite3.Connection) -> int:
    """Studies in the index."""
    return int(conn.execute("SELECT count(*) FROM studies").fetchone()[0])


def done_job_latencies(conn: sqlite3.Connection) -> list[float]:
    """Seconds from a study becoming stable (job created) to its job being done, per done job."""
    return [
        float(row[0])
        for row in conn.execute(
            "SELECT finished_at - created_at FROM jobs WHERE state = 'done'"
            " AND finished_at IS NOT NULL"
        )
    ]


def patient_hash(conn: sqlite3.Connection, study_uid: str) -> str | None:
    """The keyed patient hash the index holds for a study, ``None`` if it has no such study."""
    found = conn.execute(
        "SELECT patient_id_hash FROM studies WHERE study_uid = ?", (study_uid,)
    ).fetchone()
    return None if found is None else str(found[0])


def jobs_of_studies(conn: sqlite3.Connection, study_uids: Sequence[str]) -> list[dict[str, Any]]:
    """The jobs of these studies, oldest first (the demo waits on them).

    Each object: ``id``, ``study_uid``, ``version``, ``state``, ``attempts``, ``last_error``.
    """
    marks = ",".join("?" * len(study_uids))
    rows = conn.execute(
        "SELECT id, study_uid, version, state, attempts, last_error FROM jobs"
        f" WHERE study_uid IN ({marks}) ORDER BY id",
        list(study_uids),
    )
    return [dict(row) for row in rows]


def deliveries_of_studies(
    conn: sqlite3.Connection, study_uids: Sequence[str]
) -> list[dict[str, Any]]:
    """The outbox items of these studies, oldest first.

    Each object: ``kind``, ``state``, ``destination``, ``study_uid``, ``last_error``
    and ``dedup_key`` (``dicom:<SOP Instance UID>`` for a DICOM report: how
    the demo tells its SR from its PDF; not for display).
    """
    marks = ",".join("?" * len(study_uids))
    rows = conn.execute(
        "SELECT kind, state, destination, study_uid, last_error, dedup_key FROM outbox"
        f" WHERE study_uid IN ({marks}) ORDER BY id",
        list(study_uids),
    )
    return [dict(row) for row in rows]
