"""The instance store: received DICOM files on disk and their rows in the index.

Layout: ``<data>/dicom/<StudyUID>/<SeriesUID>/<SOPUID>.dcm`` (preamble, our
file meta, the dataset exactly as the peer sent it), written through a
temporary ``<data>/dicom/.incoming/*.part`` file that is fsync'd and renamed
(:func:`icibenefit.durable.write_atomically`).  :meth:`InstanceStore.put`
returns only after the file, its directory entry and the SQLite row are
durable (``synchronous=FULL``, see :mod:`.index`).

``sha256`` in the index is the digest of the dataset bytes (without file meta),
which is what a sender can compare with its own file: the file meta header is
ours (implementation UID, source AE) and legitimately differs.

The caller (:class:`icibenefit.listener.store.DicomStore`) validates the
dataset first: the UIDs that become path components must match the UID grammar.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydicom.uid import UID
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from icibenefit.durable import fsync_directory, write_atomically
from icibenefit.persistence import index
from icibenefit.privacy import pseudonymize
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

DICOM_DIR = Path("dicom")
_PREAMBLE = b"\x00" * 128 + b"DICM"

Disposition = Literal["stored", "duplicate", "conflict_kept", "replaced", "rejected", "failed"]


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
class Stored:
    """What :meth:`InstanceStore.put` did with one instance, and its stored size."""

    disposition: Disposition
    size: int


class InstanceStore:
    """The on-disk instance store and its index, safe to call from many threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.data_dir / DICOM_DIR
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

    def put(
        self, header: InstanceHeader, dataset_bytes: bytes, transfer_syntax: str, calling_ae: str
    ) -> Stored:
        """Store one validated dataset durably (or recognise it as a duplicate)."""
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
                    return Stored("duplicate", existing["size"])
                if self.settings.duplicate_policy == "keep_first":
                    log.warning(
                        "instance %s received again with different content; kept the first",
                        header.sop_instance_uid,
                    )
                    return Stored("conflict_kept", existing["size"])
                disposition = "replaced"
            series_dir = self.root / header.study_uid / header.series_uid
            final = series_dir / f"{header.sop_instance_uid}.dcm"
            self._make_durable_dir(series_dir)
            size = write_atomically(
                final,
                _file_parts(header, dataset_bytes, transfer_syntax, calling_ae),
                temp_dir=self.incoming,
                sync_directory=False,
            )
            try:
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
            if existing is not None and Path(existing["path"]) != final:
                Path(existing["path"]).unlink(missing_ok=True)
        if disposition == "replaced":
            log.warning("instance %s replaced by new content", header.sop_instance_uid)
        return Stored(disposition, size)

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


def _file_parts(
    header: InstanceHeader, dataset_bytes: bytes, transfer_syntax: str, ae: str
) -> tuple[bytes, bytes, bytes]:
    """Preamble, our file meta, the dataset as received: a Part 10 file."""
    meta = create_file_meta(
        sop_class_uid=UID(header.sop_class_uid),
        sop_instance_uid=UID(header.sop_instance_uid),
        transfer_syntax=UID(transfer_syntax),
    )
    meta.SourceApplicationEntityTitle = ae
    return _PREAMBLE, encode_file_meta(meta), dataset_bytes
