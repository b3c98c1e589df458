"""The outbox's queue: durable outgoing DICOM objects and FHIR writes, and their files.

Processors *enqueue* (:class:`Outbox`); the listener's sender claims and
marks items through :class:`OutboxQueue` (the delivery itself, C-STORE and
HTTP, is :class:`icibenefit.listener.outbox.OutboxSender`'s).  Enqueueing
writes the payload to ``<data>/outbox/pending/`` (fsync'd) and then commits a
row, so an item exists either completely or not at all.  Each item has a
``dedup_key`` (unique): a retried job enqueueing the same key again is a
no-op, which is what keeps outgoing reports from being duplicated.

A failed attempt is due again after ``retry_base_seconds * 2**(attempts-1)``;
after ``outbox_max_attempts`` attempts, or at once for a permanent refusal,
the item is ``dead`` (a dead letter kept with its payload and last error).
:func:`requeue_dead` makes dead items due now with a fresh attempt budget.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from icibenefit import audit
from icibenefit.durable import write_atomically
from icibenefit.errors import IciBenefitError
from icibenefit.persistence import queries
from icibenefit.settings import Settings

ItemKind = Literal["dicom", "fhir"]
OUTBOX_STATES = ("queued", "sending", "done", "dead")
#: ``sent`` names the delivered state as the ``sent`` audit event does.
STATE_SYNONYMS = {"sent": "done"}
MAX_BACKOFF_SECONDS = 3600.0
#: Characters of an error message kept in an audit entry (entries stay one short line).
AUDIT_ERROR_CHARS = 300
OUTBOX_DIR = Path("outbox")


def pending_dir(data_dir: Path) -> Path:
    """Payloads of queued items (deleted once delivered)."""
    return data_dir / OUTBOX_DIR / "pending"


def local_dicom_dir(data_dir: Path) -> Path:
    """Where DICOM items go when no PACS is configured (``<SOP>.dcm``)."""
    return data_dir / OUTBOX_DIR / "dicom"


def local_fhir_dir(data_dir: Path) -> Path:
    """Where FHIR requests go when no FHIR server is configured (``<id>.json``)."""
    return data_dir / OUTBOX_DIR / "fhir"


class NotRetryableError(IciBenefitError):
    """An operator asked to re-send an item that is not a dead letter."""


@dataclass(frozen=True)
class OutboxItem:
    """A claimed outbox row."""

    id: int
    kind: ItemKind
    dedup_key: str
    payload_path: Path
    attempts: int


@dataclass(frozen=True)
class FailedItem:
    """What :meth:`OutboxQueue.fail` recorded: the new state and whom the item concerns."""

    state: str
    study_uid: str | None
    patient_id: str | None


class Outbox:
    """Enqueue side of the outbox (used by processors, in any process)."""

    def __init__(self, conn: sqlite3.Connection, settings: Settings) -> None:
        self._conn = conn
        self._settings = settings
        self.pending_dir = pending_dir(settings.data_dir)
        self.pending_dir.mkdir(parents=True, exist_ok=True)

    def enqueue_dicom(
        self,
        dataset: Dataset,
        dedup_key: str | None = None,
        *,
        study_uid: str | None = None,
        job_id: int | None = None,
    ) -> int | None:
        """Queue a DICOM object for the PACS; ``None`` if its dedup key is already queued.

        The key defaults to ``dicom:<SOPInstanceUID>``, so a deterministic UID
        makes a retried job harmless.
        """
        key = dedup_key or f"dicom:{dataset.SOPInstanceUID}"
        if self._known(key):
            return None
        if not isinstance(getattr(dataset, "file_meta", None), FileMetaDataset) or (
            "TransferSyntaxUID" not in dataset.file_meta
        ):
            meta = FileMetaDataset()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            dataset.file_meta = meta
        buffer = BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return self._insert("dicom", key, buffer.getvalue(), ".dcm", study_uid, job_id)

    def enqueue_fhir(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        dedup_key: str,
        *,
        headers: dict[str, str] | None = None,
        study_uid: str | None = None,
        job_id: int | None = None,
    ) -> int | None:
        """Queue one FHIR request (``url`` relative to the base, e.g. ``RiskAssessment``)."""
        if self._known(dedup_key):
            return None
        payload = {"method": method.upper(), "url": url, "headers": headers or {}, "body": body}
        data = json.dumps(payload, sort_keys=True).encode()
        return self._insert("fhir", dedup_key, data, ".json", study_uid, job_id)

    def _known(self, key: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM outbox WHERE dedup_key = ?", (key,)).fetchone()
        return row is not None

    def _insert(
        self,
        kind: ItemKind,
        key: str,
        data: bytes,
        suffix: str,
        study_uid: str | None,
        job_id: int | None,
    ) -> int | None:
        path = self.pending_dir / f"{uuid.uuid4().hex}{suffix}"
        write_atomically(path, data)
        now = time.time()
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO outbox (kind, dedup_key, payload_path, study_uid, job_id,"
            " state, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
            (kind, key, str(path), study_uid, job_id, now, now),
        )
        if cursor.rowcount == 0:  # lost a race with the same key
            path.unlink(missing_ok=True)
            return None
        return int(cursor.lastrowid or 0)

    def depth(self) -> int:
        """Items not yet delivered nor dead."""
        row = self._conn.execute(
            "SELECT count(*) FROM outbox WHERE state IN ('queued', 'sending')"
        ).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        """Items per state."""
        return queries.count_by_state(self._conn, "outbox", OUTBOX_STATES)


class OutboxQueue:
    """The sender's side of the table: claim due items, mark them delivered, failed or dead."""

    def __init__(self, conn: sqlite3.Connection, settings: Settings) -> None:
        self._conn = conn
        self._settings = settings

    def requeue_sending(self) -> int:
        """Items a crash left in ``sending`` are due again (at start-up)."""
        return self._conn.execute(
            "UPDATE outbox SET state = 'queued' WHERE state = 'sending'"
        ).rowcount

    def claim(self, now: float | None = None) -> OutboxItem | None:
        """Take the oldest due item, counting the attempt."""
        now = time.time() if now is None else now
        row = self._conn.execute(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1 WHERE id = (SELECT id"
            " FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT 1)"
            " RETURNING id, kind, dedup_key, payload_path, attempts",
            (now,),
        ).fetchone()
        if row is None:
            return None
        return OutboxItem(
            id=row["id"],
            kind=row["kind"],
            dedup_key=row["dedup_key"],
            payload_path=Path(row["payload_path"]),
            attempts=row["attempts"],
        )

    def mark_delivered(self, item: OutboxItem, destination: str) -> str | None:
        """Record the delivery, drop the payload; return the item's study UID."""
        self._conn.execute(
            "UPDATE outbox SET state = 'done', delivered_at = ?, destination = ?,"
            " last_error = NULL WHERE id = ?",
            (time.time(), destination, item.id),
        )
        item.payload_path.unlink(missing_ok=True)
        study = self._conn.execute(
            "SELECT study_uid FROM outbox WHERE id = ?", (item.id,)
        ).fetchone()
        return study[0] if study else None

    def fail(
        self, item: OutboxItem, message: str, *, permanent: bool, now: float | None = None
    ) -> FailedItem:
        """Record a failed attempt: due again after a backoff, or ``dead``."""
        now = time.time() if now is None else now
        if permanent or item.attempts >= self._settings.outbox_max_attempts:
            state, due = "dead", now
        else:
            delay = self._settings.retry_base_seconds * 2 ** (item.attempts - 1)
            state, due = "queued", now + min(delay, MAX_BACKOFF_SECONDS)
        row = self._conn.execute(
            "UPDATE outbox SET state = ?, next_attempt_at = ?, last_error = ? WHERE id = ?"
            " RETURNING study_uid, (SELECT patient_id FROM studies"
            " WHERE studies.study_uid = outbox.study_uid) AS patient_id",
            (state, due, message[:2000], item.id),
        ).fetchone()
        return FailedItem(
            state=state,
            study_uid=row["study_uid"] if row else None,
            patient_id=row["patient_id"] if row else None,
        )


def normalise_states(states: Sequence[str]) -> list[str]:
    """The table's state names for user input (``sent`` is ``done``); ``ValueError`` if unknown."""
    names = [STATE_SYNONYMS.get(state, state) for state in states]
    unknown = sorted(set(names) - set(OUTBOX_STATES))
    if unknown:
        choices = ", ".join([*OUTBOX_STATES, *STATE_SYNONYMS])
        raise ValueError(f"unknown outbox state {', '.join(unknown)} (one of {choices})")
    return names


def list_rows(
    conn: sqlite3.Connection, states: Sequence[str] | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Most recent outbox rows first, optionally of some states (see :func:`normalise_states`).

    Each object: ``id``, ``kind``, ``state``, ``attempts``, ``last_error``,
    ``destination`` (as recorded at delivery), ``study_uid``, ``job_id``,
    ``created_at``, ``next_attempt_at``, ``delivered_at`` (epoch seconds).
    Payloads and dedup keys stay out: they hold report content and UIDs.
    """
    names = normalise_states(states or [])
    where = f"WHERE state IN ({', '.join('?' * len(names))})" if names else ""
    rows = conn.execute(
        "SELECT id, kind, state, attempts, last_error, destination, study_uid, job_id,"
        f" created_at, next_attempt_at, delivered_at FROM outbox {where}"
        " ORDER BY id DESC LIMIT ?",
        (*names, limit),
    ).fetchall()
    return [dict(row) for row in rows]


def dead_ids(conn: sqlite3.Connection) -> list[int]:
    """Ids of every dead letter (``icibenefit outbox retry --all-dead``)."""
    return [int(row[0]) for row in conn.execute("SELECT id FROM outbox WHERE state = 'dead'")]


def last_delivery(conn: sqlite3.Connection, kind: ItemKind) -> tuple[float | None, str | None]:
    """``(delivered_at, last_error)``: the newest delivery and newest error of one kind."""
    delivered = conn.execute(
        "SELECT max(delivered_at) FROM outbox WHERE kind = ? AND state = 'done'", (kind,)
    ).fetchone()[0]
    error_row = conn.execute(
        "SELECT last_error FROM outbox WHERE kind = ? AND last_error IS NOT NULL"
        " ORDER BY id DESC LIMIT 1",
        (kind,),
    ).fetchone()
    return delivered, error_row[0] if error_row else None


def requeue_dead(
    conn: sqlite3.Connection,
    item_ids: Sequence[int],
    *,
    actor: str,
    component: str,
    now: float | None = None,
) -> list[int]:
    """Make dead letters due now with a fresh attempt budget: all of them or none.

    Raises :class:`NotRetryableError`, changing nothing, when an id is unknown,
    not dead (a queued or sending item is already on its way, a done one was
    delivered) or lost its payload.  Both outcomes are audited with ``actor``;
    each re-queued item gets its own entry, so the patient's trail shows who
    re-sent what.
    """
    ids = sorted(set(item_ids))
    if not ids:
        return []
    now = time.time() if now is None else now
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = {
            row["id"]: row
            for row in conn.execute(
                "SELECT o.id, o.kind, o.state, o.payload_path, o.study_uid, s.patient_id"
                " FROM outbox o LEFT JOIN studies s ON s.study_uid = o.study_uid"
                f" WHERE o.id IN ({', '.join('?' * len(ids))})",
                ids,
            )
        }
        refused = {item_id: _refusal(found.get(item_id)) for item_id in ids}
        refused = {item_id: reason for item_id, reason in refused.items() if reason}
        if not refused:
            conn.executemany(
                "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = ?"
                " WHERE id = ? AND state = 'dead'",
                [(now, item_id) for item_id in ids],
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if refused:
        audit.record(
            "outbox_retried",
            component=component,
            actor=actor,
            outcome="refused",
            details={"items": ids, "refused": {str(k): v for k, v in refused.items()}},
        )
        reasons = "; ".join(f"item {item_id} {reason}" for item_id, reason in refused.items())
        raise NotRetryableError(f"{reasons}: nothing re-queued")
    for item_id in ids:
        row = found[item_id]
        audit.record(
            "outbox_retried",
            component=component,
            actor=actor,
            outcome="requeued",
            patient_id=row["patient_id"],
            study_uid=row["study_uid"],
            details={"item": item_id, "kind": row["kind"]},
        )
    return ids


def _refusal(row: sqlite3.Row | None) -> str | None:
    """Why an item cannot be re-queued, or ``None`` if it can."""
    if row is None:
        return "does not exist"
    if row["state"] != "dead":
        return f"is {row['state']}, not dead"
    if not Path(row["payload_path"]).is_file():
        return "has lost its payload file"
    return None
