"""500 mutated instances over C-STORE: failure statuses, no crash, nothing outside data_dir."""

from __future__ import annotations

import logging
import random
import re
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from tests.integration.listener.dicom_factory import PATIENT_ID, write_ct_series
from tests.integration.listener.server import AE_TITLE, echoscu

pytestmark = pytest.mark.integration

EVIL_UIDS = [
    "../../x",
    "/tmp/x",
    "1.2.3/../../..",
    "..",
    "1.2\\..\\x",
    "1." + "9" * 70,
    "",
    "1.2.03",
]
MUST_FAIL = {"evil_uid", "truncated_pixels", "overlong_length", "uid_wrong_vr"}


def _split(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    end = 144 + int.from_bytes(data[140:144], "little")
    return data[:end], data[end:]


def _mutants(template: Path, out: Path, count: int, seed: int) -> list[tuple[Path, str]]:
    """Mutated copies of ``template`` (same valid file meta, broken dataset)."""
    rng = random.Random(seed)
    meta, payload = _split(template)
    pixel_at = payload.index(b"\xe0\x7f\x10\x00OW")
    kinds = [
        "evil_uid",
        "truncated_pixels",
        "truncated_anywhere",
        "overlong_length",
        "uid_wrong_vr",
        "random_vr",
        "byte_flips",
    ]
    mutants = []
    for number in range(count):
        kind = kinds[number % len(kinds)]
        body = bytearray(payload)
        if kind == "evil_uid":
            ds = dcmread(template)
            keyword = rng.choice(["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                setattr(ds, keyword, rng.choice(EVIL_UIDS))
                path = out / f"{number:04d}.dcm"
                ds.save_as(path)
            path.write_bytes(meta + _split(path)[1])  # keep the template's valid file meta
            mutants.append((path, kind))
            continue
        if kind == "truncated_pixels":
            body = body[: rng.randrange(pixel_at + 12, len(body) - 1)]
        elif kind == "truncated_anywhere":
            body = body[: rng.randrange(0, len(body))]
        elif kind == "overlong_length":
            at = payload.index(rng.choice([b"\x08\x00\x20\x00DA", b"\x08\x00\x60\x00CS"]))
            body[at + 6 : at + 8] = rng.randrange(len(body), 65535).to_bytes(2, "little")
        elif kind == "uid_wrong_vr":
            tag = rng.choice([b"\x20\x00\x0d\x00", b"\x20\x00\x0e\x00", b"\x08\x00\x18\x00"])
            at = payload.index(tag + b"UI")
            body[at + 4 : at + 6] = rng.choice([b"US", b"SS", b"FL", b"AT"])
        elif kind == "random_vr":
            candidates = [m for m in range(0, pixel_at) if bytes(body[m + 4 : m + 6]).isalpha()]
            at = rng.choice(candidates)
            body[at + 4 : at + 6] = rng.choice([b"US", b"UL", b"SQ", b"OB", b"DS", b"XX"])
        else:
            for _ in range(rng.randint(1, 8)):
                body[rng.randrange(0, len(body))] = rng.randrange(256)
        path = out / f"{number:04d}.dcm"
        path.write_bytes(meta + bytes(body))
        mutants.append((path, kind))
    return mutants


def _files_outside(root: Path, data_dir: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and data_dir not in p.parents}


def test_mutated_instances_get_failure_statuses_and_write_nothing_outside(
    start_listener,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="pydicom")  # the evil UIDs are meant to be invalid
    server = start_listener()
    template = write_ct_series(tmp_path / "template", 1, size=16).files[0]
    mutant_dir = tmp_path / "mutants"
    mutant_dir.mkdir()
    mutants = _mutants(template, mutant_dir, 500, seed=20260611)
    before = _files_outside(tmp_path, server.data_dir)

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send bytes as they are
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    statuses: dict[str, list[int]] = {}
    assoc = None
    for path, kind in mutants:
        if assoc is None or not assoc.is_established:
            assoc = ae.associate("127.0.0.1", server.port, ae_title=AE_TITLE)
            assert assoc.is_established
        response = assoc.send_c_store(path)
        statuses.setdefault(kind, []).append(int(response.Status) if response else -1)
    assert assoc is not None
    assoc.release()

    assert server.process is not None
    assert server.process.poll() is None
    assert echoscu(server.port).returncode == 0
    for kind in MUST_FAIL:
        assert statuses[kind], kind
        assert all(status >= 0xA000 for status in statuses[kind]), (kind, statuses[kind])
    answered = [s for values in statuses.values() for s in values]
    assert len(answered) == 500
    assert -1 not in answered  # every request got a response; no association was dropped

    after = _files_outside(tmp_path, server.data_dir)
    assert after - before <= {server.log_path}
    uid_path = r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*"
    stored = [p for p in (server.data_dir / "dicom").rglob("*") if p.is_file()]
    for path in stored:
        relative = path.relative_to(server.data_dir / "dicom")
        assert len(relative.parts) == 3
        assert all(re.fullmatch(uid_path, part) for part in relative.parts[:2])
        assert path.resolve().is_relative_to(server.data_dir.resolve())
    # All mutants share one SOP Instance UID: harmless mutants that were accepted are
    # stored once (the first), later ones are kept-first duplicates.
    successes = sum(1 for s in answered if s == 0)
    assert len(stored) == (1 if successes else 0)
    assert PATIENT_ID not in server.log()
