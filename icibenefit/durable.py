"""Crash-safe file writes shared by the store, the outbox, reports, models and audit.

A file that the service acknowledges, sends or points to must survive a
crash or power loss whole or not at all: write a temporary file in the same
directory, fsync it, rename it over the target (atomic on POSIX) and fsync
the directory so the rename itself is durable.  The last step is the one
hand-written code forgets; it lives here once, in :func:`replace_durably`,
which also serves renames that are not file writes: a staged model bundle
folder moved into place, an audit log rotated aside.

Libraries checked: ``atomicwrites`` (archived by its author in 2022) and the
standard library (``tempfile``/``os.replace`` do not fsync the directory).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (creations, renames, deletions) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: Path | str, target: Path) -> None:
    """Rename ``source`` (a file or a folder) to ``target`` and make the rename durable.

    The rename is atomic on POSIX when both are on one file system (callers
    stage next to the target for that): readers see the old name or the new
    one, never a part.  The folders holding both names are fsync'd, so after a
    crash the rename has either happened or not.
    """
    source = Path(source)
    os.replace(source, target)
    fsync_directory(target.parent)
    if os.path.abspath(source.parent) != os.path.abspath(target.parent):
        fsync_directory(source.parent)  # the old name's removal, when it was elsewhere


def write_atomically(
    target: Path,
    data: bytes | Iterable[bytes],
    *,
    temp_dir: Path | None = None,
    sync_directory: bool = True,
) -> int:
    """Replace ``target`` by ``data``: readers see the old or the new file, never a part.

    The temporary file has a unique name, so concurrent writers of the same
    target never write into each other's file; the last rename wins.

    Parameters
    ----------
    target
        The file to create or replace.
    data
        Its content, or the parts of its content in order (the DICOM store
        writes preamble, file meta and dataset without joining them).
    temp_dir
        Where the temporary ``*.part`` file is written (same file system as
        ``target``); default ``target``'s directory.  The store keeps them in
        one folder so that a crash's leftovers are found in one place.
    sync_directory
        Fsync ``target``'s directory before returning.  ``False`` leaves the
        rename's durability to the caller, who must call
        :func:`fsync_directory` before relying on it (the store overlaps it
        with its index commit).

    Returns
    -------
    int
        The number of bytes written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = target.parent if temp_dir is None else temp_dir
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes | bytearray | memoryview):
                handle.write(data)
            else:
                for part in data:
                    handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        if sync_directory:
            replace_durably(temp_name, target)
        else:
            os.replace(temp_name, target)
    except BaseException:
        # A no-op once the rename happened (only the directory fsync failed).
        Path(temp_name).unlink(missing_ok=True)
        raise
    return size
