"""DICOM CT Image Storage series written with pydicom.

pydicom has no CT builder and highdicom only builds derived objects (SEG, SR,
...), so the CT Image IOD modules are filled here by hand: Patient, General
Study, Patient Study, General Series, Frame of Reference, General Equipment,
General Image, Image Plane, Image Pixel, CT Image, VOI LUT and SOP Common.
Every value that a real scanner would take from a clock or a random source is
passed in, so that the same seed always gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from icibenefit.synth.phantom import Grid

#: Manufacturer written in every synthetic object, so nobody mistakes it for a scan.
MANUFACTURER = "icibenefit synthetic phantom"
SOFTWARE_VERSION = "icibenefit-synth 1"
RESCALE_INTERCEPT = -1024
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:icibenefit:synthetic")


def derive_uid(*parts: object) -> str:
    """A deterministic ``2.25`` UID from the given parts (seed, patient, timepoint, role...).

    A name-based (SHA-1, version 5) UUID written as a ``2.25`` UID (PS3.5 B.2):
    unique per input yet reproducible, so a second generation with the same
    seed never yields different identifiers.  ``pydicom.uid.generate_uid``
    was checked: with ``prefix=None`` it ignores ``entropy_srcs`` and returns
    a random UUID, and with a prefix its hashed suffix is not a UUID.
    """
    name = "/".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


@dataclass(frozen=True)
class PatientInfo:
    """DICOM patient-level attributes (synthetic; the name is not a person's)."""

    patient_id: str
    name: str
    birth_date: dt.date
    sex: str  # "M" or "F"


@dataclass(frozen=True)
class StudyInfo:
    """One CT study: identifiers and acquisition date/time."""

    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    accession_number: str
    study_id: str
    when: dt.datetime
    description: str = "CT CHEST WITH CONTRAST"


def build_ct_slices(
    patient: PatientInfo, study: StudyInfo, grid: Grid, volume: np.ndarray, seed_key: str
) -> list[Dataset]:
    """Return one CT Image Storage dataset per slice (feet to head), ready to save.

    Stored values are HU + 1024 in 12 bits, unsigned, the most common scanner
    convention (RescaleIntercept -1024, RescaleSlope 1).
    """
    n_z, n_y, n_x = grid.shape
    s_z, s_y, s_x = grid.spacing
    ox, oy, _ = grid.origin
    age_years = int((study.when.date() - patient.birth_date).days // 365.25)
    stored = np.clip(volume.astype(np.int32) - RESCALE_INTERCEPT, 0, 4095).astype(np.uint16)
    acquisition = study.when + dt.timedelta(minutes=2)
    slices = []
    for k in range(n_z):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = derive_uid(seed_key, study.series_uid, "slice", k)
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _da(study.when)
        ds.StudyTime = _tm(study.when)
        ds.SeriesTime = _tm(study.when + dt.timedelta(minutes=1))
        ds.AcquisitionTime = _tm(acquisition)
        ds.ContentTime = _tm(acquisition + dt.timedelta(seconds=k))
        ds.AccessionNumber = study.accession_number
        ds.Modality = "CT"
        ds.Manufacturer = MANUFACTURER
        ds.InstitutionName = "Synthetic Hospital"
        ds.ReferringPhysicianName = ""
        ds.StationName = "SYNTHCT1"
        ds.StudyDescription = study.description
        ds.SeriesDescription = f"Chest {s_z:g} mm"
        ds.ManufacturerModelName = "Phantom CT"
        ds.DeviceSerialNumber = "0001"
        ds.SoftwareVersions = SOFTWARE_VERSION
        ds.PatientName = patient.name
        ds.PatientID = patient.patient_id
        ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
        ds.PatientSex = patient.sex
        ds.PatientAge = f"{age_years:03d}Y"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = f"{s_z:g}"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = f"{n_x * s_x:g}"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "150"
        ds.RotationDirection = "CW"
        ds.XRayTubeCurrent = 200
        ds.ExposureTime = 500
        ds.Exposure = 100
        ds.FilterType = "BODY"
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study.study_uid
        ds.SeriesInstanceUID = study.series_uid
        ds.StudyID = study.study_id
        ds.SeriesNumber = 2
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        z = grid.z_mm(k)
        ds.ImagePositionPatient = [_ds(ox), _ds(oy), _ds(z)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = study.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(z)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = n_y
        ds.Columns = n_x
        ds.PixelSpacing = [_ds(s_y), _ds(s_x)]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.RescaleIntercept = str(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = stored[k].tobytes()
        ds.file_meta = _file_meta(ds)
        slices.append(ds)
    return slices


def write_series(slices: list[Dataset], directory: Path) -> None:
    """Write slices as ``<n>.dcm`` (1-based instance number) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for ds in slices:
        ds.save_as(directory / f"{ds.InstanceNumber}.dcm", enforce_file_format=True)


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _da(when: dt.datetime | dt.date) -> str:
    return when.strftime("%Y%m%d")


def _tm(when: dt.datetime) -> str:
    return when.strftime("%H%M%S")


def _ds(value: float) -> str:
    """Decimal String with at most 16 characters and no float noise."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
