"""Small, valid CT series (and a SEG) written with pydicom/highdicom for listener tests.

The listener only cares about well-formed objects, UIDs and bytes, so these
are plain phantoms: a bright sphere in air, one file per slice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from icibenefit.listener.store import DicomStore, StoreOutcome

PATIENT_ID = "LISTENER-PAT-0001"
PATIENT_NAME = "Doe^Jane"


@dataclass
class CtSeries:
    """What a test needs to know about a written series."""

    files: list[Path]
    study_uid: str
    series_uid: str
    patient_id: str


def ct_slice(
    pixels: np.ndarray,
    index: int,
    *,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    patient_id: str,
    patient_name: str,
) -> Dataset:
    """One CT Image Storage dataset for an int16 slice."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = dt.date(2024, 3, 1).strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "CT"
    ds.Manufacturer = "icibenefit-tests"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [-100.0, -100.0, float(index) * 2.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceThickness = 2.0
    ds.PixelSpacing = [0.8, 0.8]
    ds.KVP = 120
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = pixels.astype("<i2").tobytes()
    return ds


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
    """Write ``n_slices`` CT files ``directory/0000.dcm``...; return their description."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    yy, xx = np.indices((size, size))
    files = []
    for index in range(n_slices):
        inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
        pixels = np.where(inside, 1064, 24) + rng.integers(0, 20, (size, size))
        ds = ct_slice(
            pixels,
            index,
            study_uid=study_uid,
            series_uid=series_uid,
            frame_uid=frame_uid,
            patient_id=patient_id,
            patient_name=patient_name,
        )
        path = directory / f"{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return CtSeries(files, study_uid, series_uid, patient_id)


def write_seg(ct: CtSeries, path: Path) -> Path:
    """A one-segment DICOM SEG (highdicom) of the bright disc on the middle slices."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    middle = len(ct.files) // 2
    # The segmented slices only: a SEG may reference a subset of its source
    # series, and highdicom then need not read hundreds of large slices.
    images = [dcmread(f) for f in ct.files[max(middle - 2, 0) : middle + 3]]
    size = int(images[0].Rows)
    yy, xx = np.indices((size, size))
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2
    mask = np.repeat(disc[None], len(images), axis=0)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="tumour",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="icibenefit-tests",
        manufacturer_model_name="listener",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(path)
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
