"""The outbox: a durable queue of outgoing DICOM objects and FHIR writes.

Processors *enqueue* (:class:`Outbox`); the service's sender thread *delivers*
(:class:`OutboxSender`).  Enqueueing writes the payload to
``<data>/outbox/pending/`` (fsync'd) and then commits a row, so an item exists
either completely or not at all.  Each item has a ``dedup_key`` (unique): a
retried job enqueueing the same key again is a no-op, which is what keeps
outgoing reports from being duplicated.

Delivery
--------
- ``dicom`` items go by C-STORE to ``pacs_ae_title@pacs_host:pacs_port`` when
  a PACS is configured, else they are written to ``<data>/outbox/dicom/<SOP>.dcm``.
- ``fhir`` items are HTTP requests (``method``, ``url`` relative to
  ``fhir_base_url``, ``body``, ``headers`` such as ``If-None-Exist``) sent with
  httpx and :func:`icibenefit.fhir.auth.auth_from_settings` (none, bearer or
  SMART backend services) when ``fhir_base_url`` is set, else written to
  ``<data>/outbox/fhir/<id>.json``.

A failed attempt is retried after ``retry_base_seconds * 2**(attempts-1)``;
after ``outbox_max_attempts`` attempts, or at once for a FHIR 4xx answer that
no retry can fix, the item is ``dead`` (a dead letter kept with its payload
and last error).  An item found ``sending`` at start-up (crash during
delivery) is sent again: delivery is at-least-once across crashes and exactly
once otherwise; PACS de-duplicate by SOP Instance UID and FHIR writes should
be conditional, so a repeat is harmless.

Dead letters
------------
A dead item is audited (``dead_letter``).  ``icibenefit outbox list`` and
``GET /outbox`` show items (:func:`list_items`); ``icibenefit outbox retry``
(:func:`requeue_dead`) makes dead items due now with a fresh attempt budget,
and the service's sender delivers them on its next pass.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

import httpx
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from icibenefit import audit
from icibenefit.durable import write_atomically
from icibenefit.errors import DeliveryError, IciBenefitError
from icibenefit.listener import queries
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

ItemKind = Literal["dicom", "fhir"]
OUTBOX_STATES = ("queued", "sending", "done", "dead")
#: ``sent`` names the delivered state as the ``sent`` audit event does.
STATE_SYNONYMS = {"sent": "done"}
MAX_BACKOFF_SECONDS = 3600.0
#: Characters of an error message kept in an audit entry (entries stay one short line).
AUDIT_ERROR_CHARS = 300


class PermanentDeliveryError(DeliveryError):
    """The destination refused the item in a way a retry cannot fix."""


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


class Outbox:
    """Enqueue side of the outbox (used by processors, in any process)."""

    def __init__(self, conn: sqlite3.Connection, settings: Settings) -> None:
        self._conn = conn
        self._settings = settings
        self.pending_dir = settings.data_dir / "outbox" / "pending"
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


class OutboxSender:
    """Delivery side: claim due items, deliver, mark done / retry / dead."""

    def __init__(self, conn: sqlite3.Connection, settings: Settings) -> None:
        self._conn = conn
        self._settings = settings
        outbox_dir = settings.data_dir / "outbox"
        self.local_dicom_dir = outbox_dir / "dicom"
        self.local_fhir_dir = outbox_dir / "fhir"
        self._client: httpx.Client | None = None

    def requeue_sending(self) -> int:
        """Items a crash left in ``sending`` are due again (at start-up)."""
        return self._conn.execute(
            "UPDATE outbox SET state = 'queued' WHERE state = 'sending'"
        ).rowcount

    def claim(self, now: float | None = None) -> OutboxItem | None:
        """Take the oldest due item."""
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

    def deliver_due(self) -> int:
        """Deliver every due item once; return how many were attempted."""
        attempted = 0
        while (item := self.claim()) is not None:
            attempted += 1
            self.attempt(item)
        return attempted

    def attempt(self, item: OutboxItem) -> None:
        """Deliver one claimed item and record the result."""
        try:
            destination = (
                self._deliver_dicom(item) if item.kind == "dicom" else self._deliver_fhir(item)
            )
        except Exception as exc:
            self._record_failure(item, exc)
            return
        self._conn.execute(
            "UPDATE outbox SET state = 'done', delivered_at = ?, destination = ?,"
            " last_error = NULL WHERE id = ?",
            (time.time(), destination, item.id),
        )
        item.payload_path.unlink(missing_ok=True)
        log.info("outbox item %d (%s) delivered to %s", item.id, item.kind, destination)
        study = self._conn.execute(
            "SELECT study_uid FROM outbox WHERE id = ?", (item.id,)
        ).fetchone()
        audit.record(
            "sent",
            component="listener.outbox",
            outcome="delivered",
            study_uid=study[0] if study else None,
            details={"item": item.id, "kind": item.kind, "destination": destination},
        )

    def _record_failure(self, item: OutboxItem, exc: Exception) -> None:
        now = time.time()
        permanent = isinstance(exc, PermanentDeliveryError)
        if permanent or item.attempts >= self._settings.outbox_max_attempts:
            state, due = "dead", now
        else:
            delay = self._settings.retry_base_seconds * 2 ** (item.attempts - 1)
            state, due = "queued", now + min(delay, MAX_BACKOFF_SECONDS)
        message = f"{type(exc).__name__}: {exc}"[:2000]
        row = self._conn.execute(
            "UPDATE outbox SET state = ?, next_attempt_at = ?, last_error = ? WHERE id = ?"
            " RETURNING study_uid, (SELECT patient_id FROM studies"
            " WHERE studies.study_uid = outbox.study_uid) AS patient_id",
            (state, due, message, item.id),
        ).fetchone()
        log.warning(
            "outbox item %d attempt %d failed (%s); now %s", item.id, item.attempts, message, state
        )
        if state == "dead":
            audit.record(
                "dead_letter",
                component="listener.outbox",
                outcome="dead",
                patient_id=row["patient_id"] if row else None,
                study_uid=row["study_uid"] if row else None,
                details={
                    "item": item.id,
                    "kind": item.kind,
                    "attempts": item.attempts,
                    "destination": destination_of(self._settings, item.kind),
                    "error": audit.strip_url_credentials(message)[:AUDIT_ERROR_CHARS],
                },
            )

    def _deliver_dicom(self, item: OutboxItem) -> str:
        settings = self._settings
        if not settings.pacs_configured:
            ds = dcmread(item.payload_path, stop_before_pixels=True)
            self.local_dicom_dir.mkdir(parents=True, exist_ok=True)
            target = self.local_dicom_dir / f"{ds.SOPInstanceUID}.dcm"
            write_atomically(target, item.payload_path.read_bytes())
            return str(target)
        meta = dcmread(item.payload_path, stop_before_pixels=True).file_meta
        ae = AE(ae_title=settings.scp_ae_title)
        ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
        assoc = ae.associate(
            str(settings.pacs_host),
            int(settings.pacs_port or 0),
            ae_title=str(settings.pacs_ae_title),
        )
        if not assoc.is_established:
            raise DeliveryError(f"association with {settings.pacs_ae_title} failed")
        try:
            status = assoc.send_c_store(item.payload_path)
        finally:
            assoc.release()
        code = int(getattr(status, "Status", -1)) if status else -1
        if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:
            raise DeliveryError(f"C-STORE answered status 0x{code & 0xFFFF:04X}")
        return f"{settings.pacs_ae_title}@{settings.pacs_host}:{settings.pacs_port}"

    def _deliver_fhir(self, item: OutboxItem) -> str:
        settings = self._settings
        if not settings.fhir_base_url:
            self.local_fhir_dir.mkdir(parents=True, exist_ok=True)
            target = self.local_fhir_dir / f"{item.id:08d}.json"
            write_atomically(target, item.payload_path.read_bytes())
            return str(target)
        request = json.loads(item.payload_path.read_text(encoding="utf-8"))
        headers = {"Content-Type": "application/fhir+json", **request["headers"]}
        url = settings.fhir_base_url.rstrip("/") + "/" + request["url"].lstrip("/")
        response = self._fhir_client().request(
            request["method"], url, json=request["body"], headers=headers
        )
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise DeliveryError(f"FHIR server answered {response.status_code}")
        if response.status_code >= 400:
            raise PermanentDeliveryError(f"FHIR server answered {response.status_code}")
        return url

    def _fhir_client(self) -> httpx.Client:
        """One client per sender, with the settings' auth (bearer or SMART backend)."""
        if self._client is None:
            from icibenefit.fhir.auth import auth_from_settings

            self._client = httpx.Client(
                auth=auth_from_settings(self._settings),
                timeout=self._settings.fhir_timeout_seconds,
            )
        return self._client

    def close(self) -> None:
        """Release the HTTP client."""
        if self._client is not None:
            self._client.close()
            self._client = None


def destination_of(settings: Settings, kind: str, delivered_to: str | None = None) -> str:
    """Where an item went (``delivered_to``) or goes next, without credentials or ids.

    FHIR URLs go through :func:`icibenefit.fhir.client.redact_url` (userinfo,
    query and resource ids removed), so a conditional URL cannot leak an
    identifier; a DICOM destination is ``AE@host:port`` or the local folder.
    """
    if kind == "fhir":
        target = delivered_to or settings.fhir_base_url
        if target is None:
            return str(settings.data_dir / "outbox" / "fhir")
        if "://" not in target:  # a local file
            return target
        from icibenefit.fhir.client import redact_url

        return redact_url(httpx.URL(target))
    if delivered_to is not None:
        return delivered_to
    if settings.pacs_configured:
        return f"{settings.pacs_ae_title}@{settings.pacs_host}:{settings.pacs_port}"
    return str(settings.data_dir / "outbox" / "dicom")


def normalise_states(states: Sequence[str]) -> list[str]:
    """The table's state names for user input (``sent`` is ``done``); ``ValueError`` if unknown."""
    names = [STATE_SYNONYMS.get(state, state) for state in states]
    unknown = sorted(set(names) - set(OUTBOX_STATES))
    if unknown:
        choices = ", ".join([*OUTBOX_STATES, *STATE_SYNONYMS])
        raise ValueError(f"unknown outbox state {', '.join(unknown)} (one of {choices})")
    return names


def list_items(
    conn: sqlite3.Connection,
    settings: Settings,
    states: Sequence[str] | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Most recent outbox items first, optionally of some states (see :func:`normalise_states`).

    Each object: ``id``, ``kind``, ``state``, ``attempts``, ``last_error``,
    ``destination`` (see :func:`destination_of`), ``study_uid``, ``job_id``,
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
    items = []
    for row in rows:
        item = dict(row)
        item["destination"] = destination_of(settings, item["kind"], item["destination"])
        if item["last_error"] is not None:
            item["last_error"] = audit.strip_url_credentials(item["last_error"])
        items.append(item)
    return items


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
