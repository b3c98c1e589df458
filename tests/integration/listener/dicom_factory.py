"""CT series (and a SEG) written to disk for the listener tests and benchmark.

The listener only cares about well-formed objects, UIDs and bytes, so these
are plain phantoms: a bright disc in air, one file per slice, built with the
shared factory of ``tests.peers.dicom_objects``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import generate_uid

from icibenefit.listener.store import DicomStore, StoreOutcome
from tests.peers.dicom_objects import CtHeader, ct_slice, seg_from_mask

PATIENT_ID = "LISTENER-PAT-0001"
PATIENT_NAME = "Doe^Jane"
SPACING = (0.8, 0.8, 2.0)


@dataclass
class CtSeries:
    """What a test needs to know about a written series."""

    files: list[Path]
    study_uid: str
    series_uid: str
    patient_id: str


def write_ct_series(
    directory: Path,
    n_slices: int,
    *,
    size: int = 32,
    seed: int = 0,
    patient_id: str = PATIENT_ID,
    patient_name: str = PATIENT_NAME,
    study_uid: str | None = None,
) -> CtSeries:
    """Write ``n_slices`` CT files ``directory/0000.dcm``...; return their description.

    Slice by slice, so a 300-slice 512 x 512 series never sits in memory whole.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    header = CtHeader(
        study_uid=study_uid or generate_uid(),
        patient_id=patient_id,
        patient_name=patient_name,
        study_date=dt.date(2024, 3, 1),
        study_time="101500",
    )
    yy, xx = np.indices((size, size))
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    files = []
    for index in range(n_slices):
        hu = np.where(inside, 40, -1000) + rng.integers(0, 20, (size, size))
        ds = ct_slice(hu, index, (-100.0, -100.0, index * SPACING[2]), header, spacing=SPACING)
        path = directory / f"{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return CtSeries(files, header.study_uid, header.series_uid, patient_id)


def write_seg(ct: CtSeries, path: Path) -> Path:
    """A one-segment DICOM SEG (highdicom) of the bright disc on the middle slices."""
    middle = len(ct.files) // 2
    # The segmented slices only: a SEG may reference a subset of its source
    # series, and highdicom then need not read hundreds of large slices.
    images = [dcmread(f) for f in ct.files[max(middle - 2, 0) : middle + 3]]
    size = int(images[0].Rows)
    yy, xx = np.indices((size, size))
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2
    seg_from_mask(images, {"tumour": np.repeat(disc[None], len(images), axis=0)}).save_as(path)
    return path


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's dataset as a peer sends it: the bytes after the file meta group."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL value
    return data[144 + group_length :]


def dataset_sha256(path: Path) -> str:
    """SHA-256 of a Part 10 file's dataset (what the index records)."""
    return hashlib.sha256(dataset_bytes(path)).hexdigest()


def receive(
    store: DicomStore, paths: list[Path], calling_ae: str = "TESTSCU"
) -> list[StoreOutcome]:
    """Hand each file to ``store`` as the SCP does after a C-STORE (Explicit VR LE)."""
    outcomes = []
    for path in paths:
        ds = dcmread(path, stop_before_pixels=True)
        outcomes.append(
            store.store(
                dataset_bytes(path),
                str(ds.file_meta.TransferSyntaxUID),
                str(ds.SOPClassUID),
                str(ds.SOPInstanceUID),
                calling_ae,
            )
        )
    return outcomes
