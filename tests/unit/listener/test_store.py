from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pydicom import dcmread

from icibenefit.listener.store import (
    CANNOT_UNDERSTAND,
    SUCCESS,
    DicomStore,
    is_valid_uid,
    parse_header,
)
from icibenefit.persistence import index
from icibenefit.privacy import pseudonymize
from tests.integration.listener.dicom_factory import (
    PATIENT_ID,
    dataset_bytes,
    dataset_sha256,
    write_ct_series,
)

EXPLICIT = "1.2.840.10008.1.2.1"


def _payload(path: Path) -> tuple[bytes, str, str]:
    ds = dcmread(path, stop_before_pixels=True)
    return dataset_bytes(path), str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def _store(store: DicomStore, path: Path) -> object:
    payload, sop_class, sop_instance = _payload(path)
    return store.store(payload, EXPLICIT, sop_class, sop_instance, "TESTSCU")


@pytest.mark.parametrize(
    ("uid", "valid"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", True),
        ("0.1", True),
        ("1.02.3", False),
        ("../../x", False),
        ("1.2/3", False),
        ("1..2", False),
        ("", False),
        ("1." + "1" * 63, False),
        ("1.2.", False),
    ],
)
def test_uid_grammar(uid: str, valid: bool) -> None:
    assert is_valid_uid(uid) is valid


def test_store_writes_file_and_index(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    ct = write_ct_series(tmp_path / "ct", 2)
    store = DicomStore(settings)
    outcome = _store(store, ct.files[0])
    assert outcome.status == SUCCESS
    assert outcome.disposition == "stored"
    sop = dcmread(ct.files[0]).SOPInstanceUID
    stored = settings.data_dir / "dicom" / ct.study_uid / ct.series_uid / f"{sop}.dcm"
    assert stored.is_file()
    assert dataset_sha256(stored) == dataset_sha256(ct.files[0])
    assert dcmread(stored).file_meta.SourceApplicationEntityTitle == "TESTSCU"
    conn = index.connect(settings.data_dir)
    row = conn.execute("SELECT * FROM instances WHERE sop_instance_uid = ?", (sop,)).fetchone()
    assert row["sha256"] == dataset_sha256(ct.files[0])
    assert row["size"] == stored.stat().st_size
    study = conn.execute("SELECT * FROM studies").fetchone()
    assert study["patient_id"] == PATIENT_ID
    assert study["patient_id_hash"] == pseudonymize(PATIENT_ID, "icibenefit-default-site-key")
    assert study["instances"] == 1
    assert study["pending"] == 1
    assert not list((settings.data_dir / "dicom" / ".incoming").iterdir())


def test_identical_duplicate_changes_nothing(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    ct = write_ct_series(tmp_path / "ct", 1)
    store = DicomStore(settings)
    _store(store, ct.files[0])
    conn = index.connect(settings.data_dir)
    conn.execute("UPDATE studies SET pending = 0")
    outcome = _store(store, ct.files[0])
    assert (outcome.status, outcome.disposition) == (SUCCESS, "duplicate")
    study = conn.execute("SELECT instances, pending FROM studies").fetchone()
    assert tuple(study) == (1, 0)


@pytest.mark.parametrize(("policy", "kept"), [("keep_first", "first"), ("replace", "second")])
def test_conflicting_duplicate_follows_policy(
    make_settings, tmp_path: Path, policy: str, kept: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(duplicate_policy=policy)
    first = write_ct_series(tmp_path / "a", 1, seed=1).files[0]
    ds = dcmread(first)
    ds.PixelData = bytes(len(ds.PixelData))
    second = tmp_path / "second.dcm"
    ds.save_as(second)
    store = DicomStore(settings)
    _store(store, first)
    outcome = _store(store, second)
    assert outcome.status == SUCCESS
    conn = index.connect(settings.data_dir)
    row = conn.execute("SELECT sha256, path FROM instances").fetchone()
    expected = dataset_sha256(first if kept == "first" else second)
    assert row["sha256"] == expected
    assert dataset_sha256(Path(row["path"])) == expected
    assert conn.execute("SELECT instances FROM studies").fetchone()[0] == 1
    assert "different content" in caplog.text or "replaced" in caplog.text


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_rejects_path_traversal_uid_without_writing(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    path = write_ct_series(tmp_path / "ct", 1).files[0]
    ds = dcmread(path)
    ds.StudyInstanceUID = "../../x"
    ds.save_as(path)
    outcome = _store(DicomStore(settings), path)
    assert (outcome.status, outcome.disposition) == (CANNOT_UNDERSTAND, "rejected")
    files = [p for p in (settings.data_dir / "dicom").rglob("*") if p.is_file()]
    assert files == []
    assert not (tmp_path / "x").exists()


def test_rejects_truncated_and_mismatched(make_settings, tmp_path: Path) -> None:
    path = write_ct_series(tmp_path / "ct", 1).files[0]
    payload, sop_class, sop_instance = _payload(path)
    with pytest.raises(Exception, match=r"undecodable|pixel data|shorter than its declared length"):
        parse_header(payload[: len(payload) // 2], EXPLICIT, sop_class, sop_instance)
    with pytest.raises(Exception, match="SOP Instance UID differs"):
        parse_header(payload, EXPLICIT, sop_class, "1.2.3")
    with pytest.raises(Exception, match="pixel data has"):
        parse_header(_shorten_pixels(payload), EXPLICIT, sop_class, sop_instance)


def _shorten_pixels(payload: bytes) -> bytes:
    """Drop 64 bytes of pixel data and fix the element length, leaving a consistent stream."""
    marker = b"\xe0\x7f\x10\x00OW\x00\x00"
    at = payload.index(marker)
    length = int.from_bytes(payload[at + 8 : at + 12], "little")
    head = payload[: at + 8] + (length - 64).to_bytes(4, "little")
    return head + payload[at + 12 : at + 12 + length - 64]


def test_deflated_dataset_is_parsed(tmp_path: Path) -> None:
    import zlib

    path = write_ct_series(tmp_path / "ct", 1).files[0]
    payload, sop_class, sop_instance = _payload(path)
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    deflated = compressor.compress(payload) + compressor.flush()
    header = parse_header(deflated, "1.2.840.10008.1.2.1.99", sop_class, sop_instance)
    assert header.sop_instance_uid == sop_instance
    assert header.modality == "CT"


def test_partial_files_are_discarded(make_settings) -> None:
    store = DicomStore(make_settings())
    (store.incoming / "abc.part").write_bytes(b"x")
    assert store.discard_partial_files() == 1
    assert not list(store.incoming.iterdir())


def test_database_is_wal_and_migrated(make_settings) -> None:
    settings = make_settings()
    conn = index.connect(settings.data_dir)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(index.MIGRATIONS)
    index.migrate(conn)  # idempotent
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO jobs (study_uid, version, state, next_attempt_at, created_at)"
            " VALUES ('1', 1, 'bogus', 0, 0)"
        )


def test_identical_resend_restores_a_missing_file(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    path = write_ct_series(tmp_path / "ct", 1).files[0]
    store = DicomStore(settings)
    _store(store, path)
    conn = index.connect(settings.data_dir)
    stored = Path(conn.execute("SELECT path FROM instances").fetchone()[0])
    stored.unlink()
    outcome = _store(store, path)
    assert outcome.disposition == "replaced"
    assert dataset_sha256(stored) == dataset_sha256(path)
    assert conn.execute("SELECT instances FROM studies").fetchone()[0] == 1
