"""Read-only views of the index for the CLI and the status API (no PHI in clear).

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
