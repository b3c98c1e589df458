"""Durable storage of received instances: validate, then store and index (persistence).

The SCP calls :meth:`DicomStore.store` with the dataset exactly as it arrived
(no decode/re-encode round trip: the bytes on disk after the file meta header
are the bytes the peer sent).  Success is returned only after

1. the header was parsed and every element converted (malformed input is
   rejected here, before anything touches the disk),
2. the UIDs that become path components matched the UID grammar,
3. the file (preamble + file meta + dataset) was written to a temporary file
   in the same file system, fsync'd, renamed to
   ``<data>/dicom/<StudyUID>/<SeriesUID>/<SOPUID>.dcm`` and its directory
   fsync'd, and
4. the SQLite row was committed (``synchronous=FULL``); steps 3 and 4 are
   :class:`icibenefit.persistence.instances.InstanceStore`'s.

A refused instance is audited as ``instance_refused`` with the calling AE,
the status and the reason only: nothing in a dataset that failed validation
(or could not be stored) is trusted, so no UID or patient reference is taken
from it.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from icibenefit import audit
from icibenefit.errors import DicomInputError
from icibenefit.persistence.instances import Disposition, InstanceHeader, InstanceStore
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

# DIMSE status codes (PS3.4 Annex B.2.3, PS3.7 Annex C).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_NOT_SUPPORTED = 0x0122
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0xC211

# PS3.5 9.1: components of digits without leading zeros, at most 64 characters.
_UID_GRAMMAR = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_NATIVE_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}
)
_DEFLATED = "1.2.840.10008.1.2.1.99"
_UNDEFINED_LENGTH = 0xFFFFFFFF
# Storage classes whose instances are useless without pixel data (Type 1).
_IMAGE_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.66.4"}
)


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a UID by the grammar of PS3.5 9.1 (safe as a file name)."""
    return isinstance(value, str) and len(value) <= 64 and bool(_UID_GRAMMAR.fullmatch(value))


class SopClassMismatchError(DicomInputError):
    """The dataset's SOP Class UID is not the request's (answered 0xA900)."""


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one C-STORE: the status to answer and why."""

    status: int
    disposition: Disposition
    size: int = 0
    header: InstanceHeader | None = None


def parse_header(
    dataset_bytes: bytes,
    transfer_syntax: str,
    affected_sop_class: str,
    affected_sop_instance: str,
) -> InstanceHeader:
    """Decode and check a received dataset; raise :class:`DicomInputError` if unusable.

    Every element must be complete (see :func:`_check_complete`), the UIDs that
    become path components must be UIDs, the request's SOP class and instance
    must be the dataset's, image classes must carry pixel data, and native
    pixel data must have exactly the length its image attributes announce, so
    malformed input is refused now rather than failing the pipeline later.
    """
    syntax = UID(transfer_syntax)
    raw = dataset_bytes
    if transfer_syntax == _DEFLATED:
        try:
            raw = zlib.decompress(dataset_bytes, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise DicomInputError(f"deflated dataset does not inflate: {exc}") from None
    try:
        ds = read_dataset(BytesIO(raw), syntax.is_implicit_VR, syntax.is_little_endian)
        _check_complete(ds)
        header = InstanceHeader(
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            patient_id=str(ds.get("PatientID", "") or ""),
            modality=str(ds.get("Modality", "") or ""),
            study_date=str(ds.get("StudyDate", "") or ""),
            series_date=str(ds.get("SeriesDate", "") or ""),
        )
    except DicomInputError:
        raise
    except Exception as exc:  # pydicom raises many types on malformed input
        raise DicomInputError(f"undecodable dataset ({type(exc).__name__})") from None
    for name in ("sop_class_uid", "sop_instance_uid", "study_uid", "series_uid"):
        if not is_valid_uid(getattr(header, name)):
            raise DicomInputError(f"{name} is not a valid UID")
    if header.sop_instance_uid != affected_sop_instance:
        raise DicomInputError("SOP Instance UID differs from the request's")
    if header.sop_class_uid != affected_sop_class:
        raise SopClassMismatchError("SOP Class UID differs from the request's")
    if header.sop_class_uid in _IMAGE_SOP_CLASSES and "PixelData" not in ds:
        raise DicomInputError("image without pixel data (truncated?)")
    if transfer_syntax in _NATIVE_SYNTAXES and "PixelData" in ds:
        _check_native_pixel_length(ds)
    return header


def _check_complete(ds: Dataset) -> None:
    """Fail on any value shorter than its declared length, in nested items too.

    pydicom reads a value cut short by the end of the stream without complaint
    (checked with pydicom 3.0), so a truncated file would otherwise pass.
    Plain values stay unconverted (pydicom only warns on invalid values, so
    converting them validates nothing and costs ~50 us per element);
    sequences are parsed to check their items.
    """
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement):
            if (
                raw.value is not None
                and raw.length != _UNDEFINED_LENGTH
                and len(raw.value) != raw.length
            ):
                raise DicomInputError(f"element {tag} is shorter than its declared length")
            if raw.VR not in (None, "SQ") and raw.length != _UNDEFINED_LENGTH:
                continue
        element = ds[tag]
        if element.VR == "SQ":
            for item in element.value:
                _check_complete(item)


def _check_native_pixel_length(ds: Dataset) -> None:
    try:
        expected = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("SamplesPerPixel", 1))
            * int(ds.get("NumberOfFrames", 1) or 1)
            * int(ds.BitsAllocated)
        )
    except (AttributeError, TypeError, ValueError):
        raise DicomInputError("pixel data without usable image attributes") from None
    expected_bytes = (expected + 7) // 8
    actual = len(ds.PixelData)
    if actual not in (expected_bytes, expected_bytes + 1):  # odd lengths are padded
        raise DicomInputError(f"pixel data has {actual} bytes, expected {expected_bytes}")


class DicomStore:
    """Validate received datasets, store them (:class:`InstanceStore`), answer and audit.

    Safe to call from many threads (one per association).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instances = InstanceStore(settings)

    @property
    def incoming(self) -> Path:
        """The folder of temporary files (crash leftovers are discarded at start-up)."""
        return self.instances.incoming

    def discard_partial_files(self) -> int:
        """Delete temporary files a crash left behind; return how many."""
        return self.instances.discard_partial_files()

    def store(
        self,
        dataset_bytes: bytes,
        transfer_syntax: str,
        affected_sop_class: str,
        affected_sop_instance: str,
        calling_ae: str,
    ) -> StoreOutcome:
        """Store one received dataset durably and return the status to answer."""
        try:
            header = parse_header(
                dataset_bytes, transfer_syntax, affected_sop_class, affected_sop_instance
            )
        except DicomInputError as exc:
            mismatch = isinstance(exc, SopClassMismatchError)
            status = DATASET_MISMATCH if mismatch else CANNOT_UNDERSTAND
            log.warning("rejected instance from %s: %s", calling_ae, exc)
            audit_refusal(calling_ae, status, "rejected", str(exc))
            return StoreOutcome(status, "rejected")
        try:
            stored = self.instances.put(header, dataset_bytes, transfer_syntax, calling_ae)
        except (OSError, sqlite3.Error) as exc:
            log.error("could not store instance %s: %s", header.sop_instance_uid, exc)
            # An OSError's text names the file, whose path holds the UIDs: keep the cause only.
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            reason = f"{type(exc).__name__}: {cause}"
            audit_refusal(calling_ae, OUT_OF_RESOURCES, "failed", reason)
            return StoreOutcome(OUT_OF_RESOURCES, "failed", header=header)
        if stored.disposition in ("duplicate", "conflict_kept"):
            return StoreOutcome(SUCCESS, stored.disposition, stored.size, header)
        audit.record(
            "received",
            sync=False,
            component="listener.store",
            actor=calling_ae,
            outcome=stored.disposition,
            patient_id=header.patient_id,
            study_uid=header.study_uid,
            details={"modality": header.modality, "sop_class": header.sop_class_uid},
        )
        return StoreOutcome(SUCCESS, stored.disposition, stored.size, header)


def audit_refusal(calling_ae: str, status: int, outcome: Disposition, reason: str) -> None:
    """Record a refused C-STORE: who sent it, what we answered and why (no header values)."""
    audit.record(
        "instance_refused",
        sync=False,
        component="listener.store",
        actor=calling_ae,
        outcome=outcome,
        details={"status": f"0x{status:04X}", "reason": reason[:200]},
    )
