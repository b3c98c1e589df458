"""The audit log: who touched which patient's data, when, and how it ended.

Every access to a patient's data (a DICOM instance *received*, a study found
*stable*, a clinical record *fetched* from FHIR, a report *built*, a report
*sent*), every start of the service with its settings, every model promotion
or rollback, every operator action and every failure (a refused instance,
association or connection, a dead job, a dead letter in the outbox) is one
JSON object on one line of
``<data_dir>/audit/audit.jsonl``::

    {"ts": "2026-11-22T07:01:02.345678Z", "event": "received",
     "component": "listener.store", "actor": "ORTHANC", "outcome": "stored",
     "patient": "p-1f0c...", "study": "s-9a7b...", "pid": 4242, "details": {...}}

Identifiers are never written in clear text.  ``patient`` is
:func:`icibenefit.privacy.pseudonymize` of the DICOM PatientID with the site key;
``study`` is the same keyed hash of the Study Instance UID with an ``s-``
prefix (:func:`study_reference`).  A Study Instance UID is not a patient
identifier by itself, but the PACS maps it to one in a single query and the
DICOM de-identification profile (PS3.15 Annex E) replaces it for that reason,
so it is hashed too; ``icibenefit``'s own tools and the status page print the
same reference, so an operator can still follow one study through the log.
Details that contain the clear patient identifier are replaced by its pseudonym
as a last line of defence.

Writing and rotation
--------------------
Workers are separate processes, so several processes append to one file.
The stdlib was checked first: :class:`logging.handlers.RotatingFileHandler`
rotates per process (each handler keeps its own stream and renames the file
when *its* stream is long), and the logging cookbook states that logging to
one file from several processes is not supported; with several processes the
renames race and entries land in the wrong file or are deleted.  Hence this
small writer:

- each entry is serialised to one line of at most :data:`MAX_LINE_BYTES`
  (PIPE_BUF, 4096) bytes and written with a *single* ``write(2)`` to a
  descriptor opened with ``O_APPEND``; on Linux local file systems the kernel
  positions and writes an ``O_APPEND`` write under the inode lock, so lines
  from different processes and threads never interleave (not on NFS);
- the file is opened for each entry, so after a rotation by any process the
  next entry goes to the new file; an entry written concurrently with a
  rotation lands, complete, in the rotated file;
- rotation happens under an exclusive ``flock`` on ``audit/.lock`` (plus a
  thread lock, as ``flock`` does not exclude threads sharing a descriptor):
  the size is checked again under the lock, so only one process rotates, by
  one atomic ``rename`` to ``audit-<UTC time>.jsonl``; the oldest rotated
  files beyond ``audit_backups`` are deleted (0 keeps them all);
- entries about study-level events, reports, deliveries, settings and models
  are fsync'd; the per-instance ``received`` entries are not (they are
  written on the SCP's hot path, where the instance itself was just fsync'd;
  they survive a crash of the process, a power loss may lose the last ones),
  nor are the SCP's refusals (``instance_refused``, ``association_rejected``,
  ``connection_refused``), which any peer that reaches the port can trigger
  at will: an fsync each would let it slow the SCP down.

A failure to write an entry is logged as an error and does not fail the
action being audited: a full audit disk must not make the PACS's C-STOREs
fail.  Monitor the service log for ``audit log write failed``.

Use
---
The audit log is process-wide, like :mod:`logging`: each process calls
:func:`configure` once with its settings (the service at start, each worker,
CLI commands that change models) and code anywhere calls :func:`record`.
A process that was never configured records nothing (unit tests of other
areas, library use).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import pwd
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from icibenefit.durable import replace_durably, write_atomically
from icibenefit.privacy import pseudonymize
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

AUDIT_DIRNAME = "audit"
AUDIT_FILENAME = "audit.jsonl"
LOCK_FILENAME = ".lock"
SETTINGS_HASH_FILENAME = "settings.sha256"
ROTATED_GLOB = "audit-*.jsonl"
#: PIPE_BUF on Linux; lines stay below it so one write(2) is one line.
MAX_LINE_BYTES = 4096
#: The events this release writes (documented in deploy/README.md, "Audit log").
EVENTS = frozenset(
    {
        "received",
        "study_stable",
        "fetched",
        "reported",
        "sent",
        "settings_loaded",
        "model_promoted",
        "model_rolled_back",
        "job_retried",
        # Failures: what was refused or given up, and the operator's re-sends.
        "instance_refused",
        "association_rejected",
        "connection_refused",
        "dead_letter",
        "job_dead",
        "outbox_retried",
        "fhir_line_skipped",
        "predicted",
    }
)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def strip_url_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it removed."""
    return _URL_USERINFO.sub("", text)


def process_user() -> str:
    """The operating-system account running this process: the actor of CLI actions."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def study_reference(study_uid: str, key: str) -> str:
    """The keyed hash that stands for a Study Instance UID in the audit log.

    The same HMAC as patient pseudonyms, marked ``s-`` so the two kinds of
    reference cannot be confused.
    """
    return "s-" + pseudonymize(study_uid, key)[2:]


def settings_summary(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The non-secret setting values and the SHA-256 of their canonical JSON.

    Secrets (``SecretStr`` fields: the pseudonym key, the FHIR token) appear
    only as ``"<set>"`` or ``None``, and passwords written into URLs are
    removed; so the hash changes with every non-secret value but a secret
    cannot be guessed from it.
    """
    values: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values[name] = "<set>"
        elif value is None:
            values[name] = None
        elif isinstance(value, str):
            values[name] = strip_url_credentials(value)
        elif isinstance(value, Path):
            values[name] = str(value)
        elif isinstance(value, list | tuple):
            values[name] = [str(item) for item in value]
        else:
            values[name] = value
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest(), values


class AuditLog:
    """Append-only, rotated JSON-lines audit file shared by several processes.

    Parameters
    ----------
    directory
        Folder of ``audit.jsonl`` and its rotated files (created with the first entry).
    key
        Site pseudonymisation key (``Settings.pseudonym_key``).
    max_bytes
        Size at which the file is rotated.
    backups
        Rotated files kept; 0 keeps all.
    """

    def __init__(self, directory: Path, key: str, *, max_bytes: int, backups: int) -> None:
        if max_bytes < MAX_LINE_BYTES or backups < 0:
            raise ValueError(f"max_bytes >= {MAX_LINE_BYTES} and backups >= 0 required")
        self.directory = directory
        self.path = directory / AUDIT_FILENAME
        self._key = key
        self.max_bytes = max_bytes
        self.backups = backups
        self._rotation_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditLog:
        """The audit log of the settings' data directory."""
        return cls(
            settings.data_dir / AUDIT_DIRNAME,
            settings.pseudonym_key.get_secret_value(),
            max_bytes=settings.audit_max_bytes,
            backups=settings.audit_backups,
        )

    def entry(
        self,
        event: str,
        *,
        component: str,
        outcome: str = "success",
        actor: str = "system",
        patient_id: str | None = None,
        study_uid: str | None = None,
        details: Mapping[str, Any] | None = None,
        now: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Build one entry (pure); identifiers become keyed hashes."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        entry: dict[str, Any] = {
            "ts": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "event": event,
            "component": component,
            "actor": actor,
            "outcome": outcome,
        }
        if patient_id is not None:
            entry["patient"] = pseudonymize(patient_id, self._key)
        if study_uid is not None:
            entry["study"] = study_reference(study_uid, self._key)
        entry["pid"] = os.getpid()
        if details:
            clean = dict(details)
            if patient_id:
                clean = _scrub(clean, patient_id, entry["patient"])
            entry["details"] = clean
        return entry

    def record(self, event: str, *, sync: bool = True, **fields: Any) -> dict[str, Any] | None:
        """Append one entry (see :meth:`entry` for ``fields``); ``None`` if writing failed.

        ``sync`` fsyncs the file after the write (see the module notes).
        """
        entry = self.entry(event, **fields)
        try:
            self._append(_encode(entry), sync)
        except OSError as exc:
            log.error("audit log write failed (%s event): %s", event, exc)
            return None
        return entry

    def _append(self, line: bytes, sync: bool) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o640)
        except FileNotFoundError:  # first entry: the folder is made on demand
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o640)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            if sync:
                os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size >= self.max_bytes:
            self.rotate()

    def rotate(self, force: bool = False) -> Path | None:
        """Rename the current file aside if it is (still) too big; return the new name."""
        lock_path = self.directory / LOCK_FILENAME
        if not self.directory.is_dir():
            return None
        with self._rotation_lock:
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                try:
                    size = self.path.stat().st_size
                except FileNotFoundError:
                    return None
                if size == 0 or (size < self.max_bytes and not force):
                    return None  # another process rotated it meanwhile
                stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
                target = self.directory / f"audit-{stamp}.jsonl"
                replace_durably(self.path, target)
                self._prune()
                return target
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
                os.close(lock_fd)

    def rotated_files(self) -> list[Path]:
        """Rotated files, oldest first (their names sort by rotation time)."""
        return sorted(self.directory.glob(ROTATED_GLOB))

    def _prune(self) -> None:
        if self.backups == 0:
            return
        rotated = self.rotated_files()
        for old in rotated[: max(len(rotated) - self.backups, 0)]:
            old.unlink(missing_ok=True)

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry still on disk, oldest first (for tools and tests)."""
        for path in [*self.rotated_files(), self.path]:
            if not path.is_file():
                continue
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield json.loads(line)

    def settings_loaded(self, settings: Settings, component: str) -> dict[str, Any] | None:
        """Record the settings a process started with: hash, values, and whether they changed.

        The previous hash is kept in ``audit/settings.sha256``, so the entry
        says ``changed`` (naming the keys whose values differ is left to
        comparing two entries), ``unchanged`` or ``first``.
        """
        digest, values = settings_summary(settings)
        hash_file = self.directory / SETTINGS_HASH_FILENAME
        previous = hash_file.read_text(encoding="utf-8").strip() if hash_file.is_file() else None
        outcome = "first" if previous is None else "unchanged" if previous == digest else "changed"
        entry = self.record(
            "settings_loaded",
            component=component,
            outcome=outcome,
            details={"sha256": digest, "previous_sha256": previous, "values": values},
        )
        if previous != digest:
            write_atomically(hash_file, (digest + "\n").encode())
        return entry


def _encode(entry: dict[str, Any]) -> bytes:
    """One line, at most :data:`MAX_LINE_BYTES`; over-long details are dropped, not split."""
    line = json.dumps(entry, separators=(",", ":"), default=str).encode() + b"\n"
    if len(line) <= MAX_LINE_BYTES:
        return line
    trimmed = {key: value for key, value in entry.items() if key != "details"}
    trimmed["details_dropped"] = f"{len(line)} bytes exceed {MAX_LINE_BYTES}"
    return json.dumps(trimmed, separators=(",", ":")).encode() + b"\n"


def _scrub(value: Any, secret: str, replacement: str) -> Any:
    """``value`` with ``secret`` replaced wherever it stands as a whole token in a string.

    Whole tokens only, so a short PatientID such as ``12`` does not mangle
    ``2024-12-01`` but ``patient 12`` becomes ``patient p-...``.
    """
    pattern = re.compile(rf"(?<![\w.\-]){re.escape(secret)}(?![\w\-]|\.\w)")
    return _replace(value, pattern, replacement)


def _replace(value: Any, pattern: re.Pattern[str], replacement: str) -> Any:
    if isinstance(value, str):
        return pattern.sub(replacement, value)
    if isinstance(value, Mapping):
        return {key: _replace(item, pattern, replacement) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_replace(item, pattern, replacement) for item in value]
    return value


_process_log: AuditLog | None = None


def configure(settings: Settings) -> AuditLog:
    """Make the settings' audit log this process's; return it."""
    global _process_log
    _process_log = AuditLog.from_settings(settings)
    return _process_log


@contextmanager
def configured(settings: Settings) -> Iterator[AuditLog]:
    """:func:`configure` for the duration of a block (one CLI command), then restore."""
    global _process_log
    previous = _process_log
    try:
        yield configure(settings)
    finally:
        _process_log = previous


def current() -> AuditLog | None:
    """The audit log of this process, or ``None`` when :func:`configure` was not called."""
    return _process_log


def record(event: str, *, sync: bool = True, **fields: Any) -> None:
    """Append an entry to this process's audit log (nothing when unconfigured).

    The one-line call sites use this: ``audit.record("fetched",
    component="fhir", patient_id=patient_id, details={...})``.
    """
    if _process_log is None:
        log.debug("audit log not configured in this process: %s not recorded", event)
        return
    _process_log.record(event, sync=sync, **fields)
