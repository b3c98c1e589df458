"""The outbox's sender: delivers the durable queue of outgoing DICOM objects and FHIR writes.

Processors *enqueue* (:class:`icibenefit.persistence.outbox.Outbox`); the
service's sender thread *delivers* (:class:`OutboxSender`), claiming and
marking items through :class:`icibenefit.persistence.outbox.OutboxQueue`.

Delivery
--------
- ``dicom`` items (SRs and PDF reports) go to the PACS when one is configured:
  by C-STORE to ``pacs_ae_title@pacs_host:pacs_port`` (``pacs_destination =
  "dimse"``) or by DICOMweb STOW-RS to ``pacs_stow_url`` (``"stowrs"``,
  :class:`~icibenefit.listener.stow.StowRsClient`, optional HTTP basic auth);
  else they are written to ``<data>/outbox/dicom/<SOP>.dcm``.
- ``fhir`` items are HTTP requests (``method``, ``url`` relative to
  ``fhir_base_url``, ``body``, ``headers`` such as ``If-None-Exist``) sent with
  httpx and :func:`icibenefit.fhir.auth.auth_from_settings` (none, bearer or
  SMART backend services) when ``fhir_base_url`` is set, else written to
  ``<data>/outbox/fhir/<id>.json``.

A failed attempt is retried after ``retry_base_seconds * 2**(attempts-1)``;
after ``outbox_max_attempts`` attempts, or at once for an answer that no
retry can fix (a FHIR 4xx; a STOW-RS refusal such as 400, 401, 403, 409 or an
instance the origin server reports as failed, see
:attr:`~icibenefit.listener.stow.StowError.permanent`), the item is ``dead``
(a dead letter kept with its payload and last error).  An item found
``sending`` at start-up (crash during delivery) is sent again: delivery is
at-least-once across crashes and exactly once otherwise; PACS de-duplicate by
SOP Instance UID and FHIR writes should be conditional, so a repeat is harmless.

Dead letters
------------
A dead item is audited (``dead_letter``).  ``icibenefit outbox list`` and
``GET /outbox`` show items (:func:`list_items`); ``icibenefit outbox retry``
(:func:`icibenefit.persistence.outbox.requeue_dead`) makes dead items due
now with a fresh attempt budget, and the service's sender delivers them on
its next pass.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from io import BytesIO
from typing import Any

import httpx
from pydicom import dcmread
from pynetdicom import AE

from icibenefit import audit
from icibenefit.durable import write_atomically
from icibenefit.errors import DeliveryError
from icibenefit.fhir.auth import auth_from_settings
from icibenefit.fhir.client import redact_url
from icibenefit.listener.stow import StowError, StowRsClient
from icibenefit.persistence.outbox import (
    AUDIT_ERROR_CHARS,
    OutboxItem,
    OutboxQueue,
    list_rows,
    local_dicom_dir,
    local_fhir_dir,
)
from icibenefit.settings import Settings

log = logging.getLogger(__name__)


class PermanentDeliveryError(DeliveryError):
    """The destination refused the item in a way a retry cannot fix."""


class OutboxSender:
    """Delivery side: claim due items, deliver, mark done / retry / dead."""

    def __init__(self, conn: sqlite3.Connection, settings: Settings) -> None:
        self._queue = OutboxQueue(conn, settings)
        self._settings = settings
        self.local_dicom_dir = local_dicom_dir(settings.data_dir)
        self.local_fhir_dir = local_fhir_dir(settings.data_dir)
        self._client: httpx.Client | None = None
        self._stow: StowRsClient | None = None

    def requeue_sending(self) -> int:
        """Items a crash left in ``sending`` are due again (at start-up)."""
        return self._queue.requeue_sending()

    def claim(self, now: float | None = None) -> OutboxItem | None:
        """Take the oldest due item."""
        return self._queue.claim(now)

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
        study_uid = self._queue.mark_delivered(item, destination)
        log.info("outbox item %d (%s) delivered to %s", item.id, item.kind, destination)
        audit.record(
            "sent",
            component="listener.outbox",
            outcome="delivered",
            study_uid=study_uid,
            details={"item": item.id, "kind": item.kind, "destination": destination},
        )

    def _record_failure(self, item: OutboxItem, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"[:2000]
        failed = self._queue.fail(item, message, permanent=isinstance(exc, PermanentDeliveryError))
        state = failed.state
        log.warning(
            "outbox item %d attempt %d failed (%s); now %s", item.id, item.attempts, message, state
        )
        if state == "dead":
            audit.record(
                "dead_letter",
                component="listener.outbox",
                outcome="dead",
                patient_id=failed.patient_id,
                study_uid=failed.study_uid,
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
        if settings.pacs_destination == "stowrs":
            return self._deliver_stow(item)
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

    def _deliver_stow(self, item: OutboxItem) -> str:
        """POST the item's Part 10 file as it is to ``<pacs_stow_url>/studies/<study>``.

        Error messages name the configured service root only: the request URL
        holds the Study Instance UID and the response the SOP Instance UIDs,
        which stay out of ``last_error`` and the audit trail.
        """
        data = item.payload_path.read_bytes()
        header = dcmread(BytesIO(data), stop_before_pixels=True)
        target = stow_target(self._settings)
        try:
            self._stow_client().store_files(
                [(str(header.SOPInstanceUID), data)], str(header.StudyInstanceUID)
            )
        except StowError as exc:
            if exc.status is None:
                cause = exc.__cause__
                reason = f"failed: {type(cause).__name__}: {cause}" if cause else "failed"
            else:
                reason = f"answered HTTP {exc.status}" + (
                    " (instance refused)" if exc.status < 300 else ""
                )
            message = f"STOW-RS to {target} {reason}"
            if exc.permanent:
                raise PermanentDeliveryError(message) from exc
            raise DeliveryError(message) from exc
        return target

    def _stow_client(self) -> StowRsClient:
        """One STOW-RS client per sender (a pooled connection), with the settings' credentials."""
        if self._stow is None:
            self._stow = StowRsClient(
                str(self._settings.pacs_stow_url),
                auth=self._settings.pacs_stow_auth,
                timeout=self._settings.pacs_stow_timeout_seconds,
            )
        return self._stow

    def _deliver_fhir(self, item: OutboxItem) -> str:
        settings = self._settings
        if not settings.fhir_base_url:
            self.local_fhir_dir.mkdir(parents=True, exist_ok=True)
            target = self.local_fhir_dir / f"{item.id:08d}.json"
            write_atomically(target, item.payload_path.read_bytes())
            return str(target)
        request = json.loads(item.payload_path.read_text(encoding="utf-8"))
        headers = {"Content-Type": "application/fhir+json", **request["headers"]}
        url = settings.fhir_base_url.rstrip("/") + "/" + str(request["url"]).lstrip("/")
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
            self._client = httpx.Client(
                auth=auth_from_settings(self._settings),
                timeout=self._settings.fhir_timeout_seconds,
            )
        return self._client

    def close(self) -> None:
        """Release the HTTP clients."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._stow is not None:
            self._stow.close()
            self._stow = None


def stow_target(settings: Settings) -> str:
    """The configured STOW-RS service root, without credentials (a destination to show)."""
    return audit.strip_url_credentials(str(settings.pacs_stow_url).rstrip("/"))


def pacs_target(settings: Settings) -> str | None:
    """The configured PACS as people read it (``AE@host:port`` or the STOW-RS root), or ``None``."""
    if not settings.pacs_configured:
        return None
    if settings.pacs_destination == "stowrs":
        return stow_target(settings)
    return f"{settings.pacs_ae_title}@{settings.pacs_host}:{settings.pacs_port}"


def destination_of(settings: Settings, kind: str, delivered_to: str | None = None) -> str:
    """Where an item went (``delivered_to``) or goes next, without credentials or ids.

    FHIR URLs go through :func:`icibenefit.fhir.client.redact_url` (userinfo,
    query and resource ids removed), so a conditional URL cannot leak an
    identifier; a DICOM destination is ``AE@host:port``, the STOW-RS service
    root or the local folder.
    """
    if kind == "fhir":
        target = delivered_to or settings.fhir_base_url
        if target is None:
            return str(local_fhir_dir(settings.data_dir))
        if "://" not in target:  # a local file
            return target
        return redact_url(httpx.URL(target))
    if delivered_to is not None:
        return delivered_to
    return pacs_target(settings) or str(local_dicom_dir(settings.data_dir))


def list_items(
    conn: sqlite3.Connection,
    settings: Settings,
    states: Sequence[str] | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Most recent outbox items first, optionally of some states, for people to read.

    ``states`` as :func:`~icibenefit.persistence.outbox.normalise_states` accepts.
    Each object: ``id``, ``kind``, ``state``, ``attempts``, ``last_error``,
    ``destination`` (see :func:`destination_of`), ``study_uid``, ``job_id``,
    ``created_at``, ``next_attempt_at``, ``delivered_at`` (epoch seconds).
    Payloads and dedup keys stay out: they hold report content and UIDs.
    """
    items = []
    for item in list_rows(conn, states, limit):
        item["destination"] = destination_of(settings, item["kind"], item["destination"])
        if item["last_error"] is not None:
            item["last_error"] = audit.strip_url_credentials(item["last_error"])
        items.append(item)
    return items
