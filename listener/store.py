"""Durable storage of received instances: validate, write, fsync, rename, index.

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
4. the SQLite row was committed (``synchronous=FULL``, see :mod:`.index`).

A refused instance is audited as ``instance_refused`` with the calling AE,
the status and the reason only: nothing in a dataset that failed validation
(or could not be stored) is trusted, so no UID or patient reference is taken
from it.

``sha256`` in the index is the digest of the dataset bytes (without file meta),
which is what a sender can compare with its own file: the file meta header is
ours (implementation UID, source AE) and legitimately differs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from icibenefit import audit
from icibenefit.durable import fsync_directory
from icibenefit.errors import DicomInputError
from icibenefit.listener import index
from icibenefit.privacy import pseudonymize
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

# DIMSE status codes (PS3.4 Annex B.2.3, PS3.7 Annex C).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

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
_PREAMBLE = b"\x00" * 128 + b"DICM"

Disposition = Literal["stored", "duplicate", "conflict_kept", "replaced", "rejected", "failed"]


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a UID by the grammar of PS3.5 9.1 (safe as a file name)."""
    return isinstance(value, str) and len(value) <= 64 and bool(_UID_GRAMMAR.fullmatch(value))


@dataclass(frozen=True)
class InstanceHeader:
    """The attributes of a received instance that the index records."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    modality: str
    study_date: str
    series_date: str


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
        raise DicomInputError("SOP Class UID differs from the request's")
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
    """The on-disk instance store and its index, safe to call from many threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.data_dir / "dicom"
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._durable_dirs: set[Path] = {self.root}
        self._key = settings.pseudonym_key.get_secret_value()
        self._uid_locks = [threading.Lock() for _ in range(64)]
        self._fsync_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync")

    def discard_partial_files(self) -> int:
        """Delete temporary files a crash left behind; return how many."""
        count = 0
        for leftover in self.incoming.glob("*.part"):
            leftover.unlink(missing_ok=True)
            count += 1
        return count

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = index.connect(self.settings.data_dir)
            self._local.conn = conn
        return conn

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
            log.warning("rejected instance from %s: %s", calling_ae, exc)
            _audit_refusal(calling_ae, CANNOT_UNDERSTAND, "rejected", str(exc))
            return StoreOutcome(CANNOT_UNDERSTAND, "rejected")
        try:
            return self._write(header, dataset_bytes, transfer_syntax, calling_ae)
        except (OSError, sqlite3.Error) as exc:
            log.error("could not store instance %s: %s", header.sop_instance_uid, exc)
            # An OSError's text names the file, whose path holds the UIDs: keep the cause only.
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            reason = f"{type(exc).__name__}: {cause}"
            _audit_refusal(calling_ae, OUT_OF_RESOURCES, "failed", reason)
            return StoreOutcome(OUT_OF_RESOURCES, "failed", header=header)

    def _write(
        self, header: InstanceHeader, dataset_bytes: bytes, transfer_syntax: str, calling_ae: str
    ) -> StoreOutcome:
        digest = hashlib.sha256(dataset_bytes).hexdigest()
        conn = self._connection()
        # Only this process writes instances, so a lock per SOP Instance UID makes
        # check-write-index atomic for one UID while other UIDs (other associations)
        # fsync in parallel instead of queueing on the database lock.
        with self._uid_locks[hash(header.sop_instance_uid) % len(self._uid_locks)]:
            existing = conn.execute(
                "SELECT sha256, path, size, study_uid FROM instances WHERE sop_instance_uid = ?",
                (header.sop_instance_uid,),
            ).fetchone()
            disposition: Disposition = "stored"
            if existing is not None and not Path(existing["path"]).is_file():
                log.warning(
                    "indexed file of %s is missing; storing it again", header.sop_instance_uid
                )
                disposition = "replaced"
            elif existing is not None:
                if existing["sha256"] == digest:
                    return StoreOutcome(SUCCESS, "duplicate", existing["size"], header)
                if self.settings.duplicate_policy == "keep_first":
                    log.warning(
                        "instance %s received again with different content; kept the first",
                        header.sop_instance_uid,
                    )
                    return StoreOutcome(SUCCESS, "conflict_kept", existing["size"], header)
                disposition = "replaced"
            series_dir = self.root / header.study_uid / header.series_uid
            final = series_dir / f"{header.sop_instance_uid}.dcm"
            temp = self.incoming / f"{uuid.uuid4().hex}.part"
            try:
                size = self._write_temp(temp, header, dataset_bytes, transfer_syntax, calling_ae)
                self._make_durable_dir(series_dir)
                os.replace(temp, final)
                # The directory entry and the index row are flushed in parallel (the
                # file system can merge the two journal commits); both finish before
                # we answer.  After a crash in between, a row may name a file that
                # did not survive: the check above then stores the instance again.
                dir_synced = self._fsync_pool.submit(fsync_directory, series_dir)
                conn.execute("BEGIN IMMEDIATE")
                self._index(
                    conn, header, transfer_syntax, final, size, digest, calling_ae, existing
                )
                conn.execute("COMMIT")
                dir_synced.result()
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                temp.unlink(missing_ok=True)
            if existing is not None and Path(existing["path"]) != final:
                Path(existing["path"]).unlink(missing_ok=True)
        if disposition == "replaced":
            log.warning("instance %s replaced by new content", header.sop_instance_uid)
        audit.record(
            "received",
            sync=False,
            component="listener.store",
            actor=calling_ae,
            outcome=disposition,
            patient_id=header.patient_id,
            study_uid=header.study_uid,
            details={"modality": header.modality, "sop_class": header.sop_class_uid},
        )
        return StoreOutcome(SUCCESS, disposition, size, header)

    @staticmethod
    def _write_temp(
        temp: Path, header: InstanceHeader, dataset_bytes: bytes, transfer_syntax: str, ae: str
    ) -> int:
        """Preamble, our file meta, the dataset as received; fsync'd; return the size."""
        meta = create_file_meta(
            sop_class_uid=UID(header.sop_class_uid),
            sop_instance_uid=UID(header.sop_instance_uid),
            transfer_syntax=UID(transfer_syntax),
        )
        meta.SourceApplicationEntityTitle = ae
        with open(temp, "wb") as handle:
            handle.write(_PREAMBLE)
            handle.write(encode_file_meta(meta))
            handle.write(dataset_bytes)
            handle.flush()
            os.fsync(handle.fileno())
            return handle.tell()

    def _index(
        self,
        conn: sqlite3.Connection,
        header: InstanceHeader,
        transfer_syntax: str,
        path: Path,
        size: int,
        digest: str,
        calling_ae: str,
        replaced: sqlite3.Row | None,
    ) -> None:
        now = time.time()
        if replaced is not None:
            conn.execute(
                "DELETE FROM instances WHERE sop_instance_uid = ?", (header.sop_instance_uid,)
            )
            conn.execute(
                "UPDATE studies SET instances = instances - 1, bytes = bytes - ? "
                "WHERE study_uid = ?",
                (replaced["size"], replaced["study_uid"]),
            )
        conn.execute(
            "INSERT INTO instances (sop_instance_uid, study_uid, series_uid, sop_class_uid,"
            " patient_id, modality, study_date, series_date, transfer_syntax, path, size,"
            " sha256, calling_ae, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                header.sop_instance_uid,
                header.study_uid,
                header.series_uid,
                header.sop_class_uid,
                header.patient_id,
                header.modality,
                header.study_date,
                header.series_date,
                transfer_syntax,
                str(path),
                size,
                digest,
                calling_ae,
                now,
            ),
        )
        conn.execute(
            "INSERT INTO studies (study_uid, patient_id, patient_id_hash, study_date,"
            " first_received_at, last_received_at, instances, bytes, pending)"
            " VALUES (?, ?, ?, ?, ?, ?, 1, ?, 1)"
            " ON CONFLICT (study_uid) DO UPDATE SET last_received_at = excluded.last_received_at,"
            " instances = instances + 1, bytes = bytes + excluded.bytes, pending = 1",
            (
                header.study_uid,
                header.patient_id,
                pseudonymize(header.patient_id, self._key),
                header.study_date,
                now,
                now,
                size,
            ),
        )

    def _make_durable_dir(self, directory: Path) -> None:
        """Create ``directory`` and fsync every parent whose entry list changed."""
        if directory in self._durable_dirs:
            return
        missing = []
        probe = directory
        while probe not in self._durable_dirs and not probe.is_dir():
            missing.append(probe)
            probe = probe.parent
        directory.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):
            fsync_directory(created.parent)
        self._durable_dirs.add(directory)


def _audit_refusal(calling_ae: str, status: int, outcome: Disposition, reason: str) -> None:
    """Record a refused C-STORE: who sent it, what we answered and why (no header values)."""
    audit.record(
        "instance_refused",
        sync=False,
        component="listener.store",
        actor=calling_ae,
        outcome=outcome,
        details={"status": f"0x{status:04X}", "reason": reason[:200]},
    )
