"""Crash-safe writes: whole file or none, no temporary files left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from icibenefit import durable


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``durable`` fsyncs, in order (the fsyncs still happen)."""
    paths: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", recording_fsync)
    return paths


def test_write_atomically_replaces_and_fsyncs_file_and_directory(
    tmp_path: Path, synced: list[str]
) -> None:
    target = tmp_path / "new" / "pointer.json"
    durable.write_atomically(target, b"first")
    durable.write_atomically(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["pointer.json"]
    # each write: the temporary file, then the directory holding the rename
    assert synced[1::2] == [str(target.parent)] * 2
    assert all(name.endswith(".part") for name in synced[0::2])


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch
) -> None:
    target = tmp_path / "report.json"
    durable.write_atomically(target, b"old")

    def failing_replace(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(durable.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        durable.write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_replace_durably_renames_a_folder_and_fsyncs_both_parents(
    tmp_path: Path, synced: list[str]
) -> None:
    staging = tmp_path / "staging" / ".bundle.tmp"
    staging.mkdir(parents=True)
    (staging / "manifest.json").write_bytes(b"{}")
    target = tmp_path / "bundles" / "model-1"
    target.parent.mkdir()
    durable.replace_durably(staging, target)
    assert (target / "manifest.json").read_bytes() == b"{}"
    assert not staging.exists()
    assert synced == [str(target.parent), str(staging.parent)]
