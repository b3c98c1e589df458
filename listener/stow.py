"""DICOMweb STOW-RS: store reports through a PACS's web API instead of C-STORE.

Many PACS and vendor-neutral archives (and every cloud one) accept DICOM over
HTTP only.  :class:`StowRsClient` posts instances as ``multipart/related;
type="application/dicom"`` to ``{base}/studies[/{study}]`` (PS3.18 10.5) and
reads the Store Instances Response: 200 = all stored, 202 = stored with
warnings or some failed, 409 = none stored.  It is a pure client: retrying and
dead-lettering stay with the caller (the outbox's
:class:`~icibenefit.listener.outbox.OutboxSender`), which learns from
:attr:`StowError.permanent` whether a retry can help.  Instances already
encoded as Part 10 files (the outbox's payloads) are posted as they are
(:meth:`StowRsClient.store_files`), without decoding and re-encoding them.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydicom import Dataset

from icibenefit.errors import DeliveryError

DICOM_JSON = "application/dicom+json"
#: HTTP statuses after which a retry cannot succeed (bad request, auth, conflict...).
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 409, 413, 415})
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"


class StowError(DeliveryError):
    """A STOW-RS request failed; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, *, status: int | None, permanent: bool) -> None:
        super().__init__(message)
        self.status = status
        self.permanent = permanent


@dataclass(frozen=True)
class StowResult:
    """What the origin server said it stored."""

    status: int
    stored: tuple[str, ...]
    failed: dict[str, int]


def encode_part(ds: Dataset) -> bytes:
    """One instance as a DICOM Part 10 file (the payload of one body part)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart_body(parts: Sequence[bytes]) -> tuple[bytes, str]:
    """The ``multipart/related`` body and its boundary.

    The boundary is derived from the parts' digest, so the same instances give
    the same request (useful in logs and tests) and it cannot occur in them
    by chance in practice.
    """
    digest = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()
    boundary = f"icibenefit-{digest[:32]}"
    body = io.BytesIO()
    for part in parts:
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(part)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), boundary


class StowRsClient:
    """Store instances on a DICOMweb origin server.

    Parameters
    ----------
    base_url
        The DICOMweb service root, e.g. ``http://pacs:8042/dicom-web``.
    auth
        HTTP basic credentials (user, password), when the server wants them.
    timeout
        Seconds for connect and each read.
    client
        An ``httpx.Client`` to use instead of a new one (tests, shared pools);
        ``base_url`` and ``auth`` still apply per request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        timeout: float = 30.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # None = leave authentication to the client (its own default, if any).
        self.auth: httpx.Auth | None = httpx.BasicAuth(*auth) if auth else None
        self._client = client or httpx.Client(timeout=timeout)
        self._owns_client = client is None

    def close(self) -> None:
        """Close the HTTP client when this object created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> StowRsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def store(self, datasets: Sequence[Dataset], study_uid: str | None = None) -> StowResult:
        """Store ``datasets`` (one request); ``study_uid`` targets ``/studies/{uid}``.

        Raises
        ------
        StowError
            On a transport error (transient), an HTTP error status, or when
            the server reports any instance as failed.
        """
        return self.store_files(
            [(str(ds.SOPInstanceUID), encode_part(ds)) for ds in datasets], study_uid
        )

    def store_files(
        self, files: Sequence[tuple[str, bytes]], study_uid: str | None = None
    ) -> StowResult:
        """Store already encoded Part 10 files, given as (SOP Instance UID, bytes) pairs.

        The UIDs are those the server must confirm; errors as :meth:`store`.
        """
        if not files:
            return StowResult(status=200, stored=(), failed={})
        body, boundary = multipart_body([data for _, data in files])
        url = f"{self.base_url}/studies" + (f"/{study_uid}" if study_uid else "")
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": DICOM_JSON,
        }
        try:
            if self.auth is None:
                response = self._client.post(url, content=body, headers=headers)
            else:
                response = self._client.post(url, content=body, headers=headers, auth=self.auth)
        except httpx.TransportError as exc:
            message = f"STOW-RS to {url} failed: {exc}"
            raise StowError(message, status=None, permanent=False) from exc
        result = _parse_response(response)
        if response.status_code >= 300 or result.failed:
            raise StowError(
                f"STOW-RS to {url} answered {response.status_code}"
                + (f"; failed: {result.failed}" if result.failed else ""),
                status=response.status_code,
                permanent=response.status_code in PERMANENT_STATUSES
                or (response.status_code < 300 and bool(result.failed)),
            )
        wanted = {uid for uid, _ in files}
        missing = wanted - set(result.stored)
        if result.stored and missing:
            raise StowError(
                f"STOW-RS to {url} did not confirm {sorted(missing)}",
                status=response.status_code,
                permanent=False,
            )
        return result


def _parse_response(response: httpx.Response) -> StowResult:
    """Stored and failed SOP Instance UIDs from a Store Instances Response (DICOM JSON)."""
    payload: Any = None
    if response.content and "json" in response.headers.get("content-type", ""):
        try:
            payload = response.json()
        except ValueError:
            payload = None
    if isinstance(payload, list):  # some servers wrap the dataset in a list
        payload = payload[0] if payload else None
    if not isinstance(payload, dict):
        return StowResult(status=response.status_code, stored=(), failed={})
    stored = tuple(
        str(item[SOP_INSTANCE_UID]["Value"][0])
        for item in payload.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
        if SOP_INSTANCE_UID in item
    )
    failed = {
        str(item[SOP_INSTANCE_UID]["Value"][0]): int(
            item.get(FAILURE_REASON, {}).get("Value", [0])[0]
        )
        for item in payload.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
        if SOP_INSTANCE_UID in item
    }
    return StowResult(status=response.status_code, stored=stored, failed=failed)
