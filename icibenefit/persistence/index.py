"""The SQLite database shared by the SCP, the workers, the outbox and the CLI.

One file, ``<data_dir>/index.sqlite``, holds the instance index, the per-study
completion state, the job queue and the outbox, so that "stored and indexed",
"study stable -> job enqueued" and "job done -> outgoing item enqueued" are
each one transaction.  WAL mode lets the status API and the CLI read while
the SCP writes; ``synchronous=FULL`` makes every commit durable before the
SCP answers 0x0000 (the WAL is fsync'd on each commit).

Each thread or process opens its own connection with :func:`connect`
(sqlite3 connections must not be shared across threads); concurrent writers
wait on the database lock for up to ``busy_timeout``.

The schema is versioned with ``PRAGMA user_version``: :func:`migrate` applies
the missing steps of :data:`MIGRATIONS` in order, so a newer release opens an
older database in place.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

DB_FILENAME = "index.sqlite"
BUSY_TIMEOUT_MS = 30_000

MIGRATIONS: tuple[str, ...] = (
    # 1: instance index, studies, job queue, outbox, processed-study log.
    """
    CREATE TABLE instances (
        sop_instance_uid TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL,
        series_uid TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        modality TEXT NOT NULL,
        study_date TEXT NOT NULL,
        series_date TEXT NOT NULL,
        transfer_syntax TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        calling_ae TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX instances_by_study ON instances (study_uid, series_uid);
    CREATE TABLE studies (
        study_uid TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL,
        patient_id_hash TEXT NOT NULL,
        study_date TEXT NOT NULL,
        first_received_at REAL NOT NULL,
        last_received_at REAL NOT NULL,
        instances INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        pending INTEGER NOT NULL DEFAULT 1,
        version INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX studies_by_patient ON studies (patient_id);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        study_uid TEXT NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        last_error TEXT,
        worker_pid INTEGER,
        UNIQUE (study_uid, version)
    );
    CREATE INDEX jobs_by_state ON jobs (state, next_attempt_at);
    CREATE TABLE processed (
        job_id INTEGER PRIMARY KEY REFERENCES jobs (id),
        study_uid TEXT NOT NULL,
        version INTEGER NOT NULL,
        instances INTEGER NOT NULL,
        processed_at REAL NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('dicom', 'fhir')),
        dedup_key TEXT NOT NULL UNIQUE,
        payload_path TEXT NOT NULL,
        study_uid TEXT,
        job_id INTEGER,
        state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'done', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at REAL NOT NULL,
        delivered_at REAL,
        destination TEXT,
        last_error TEXT
    );
    CREATE INDEX outbox_by_state ON outbox (state, next_attempt_at);
    """,
)


def database_path(data_dir: Path) -> Path:
    """Where the database of a data directory lives."""
    return data_dir / DB_FILENAME


def connect(data_dir: Path) -> sqlite3.Connection:
    """Open (creating and migrating if needed) the database of ``data_dir``.

    Autocommit mode (``isolation_level=None``): callers open explicit
    ``BEGIN IMMEDIATE`` transactions where they read-then-write, so two
    processes never both claim the same job.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        database_path(data_dir),
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the schema steps the database has not seen yet, each atomically."""
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= len(MIGRATIONS):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
