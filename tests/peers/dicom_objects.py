"""Small, valid CT slices, SEG and RTSTRUCT objects that tests build in memory.

One factory for every area: the listener tests only need well-formed objects
with known UIDs and bytes, the pipeline tests exact geometry, the reporting
tests stable UIDs.  The synthetic cohort (``icibenefit.synth``)
writes whole studies; these make single objects with just what a test needs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid
from skimage import measure

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class CtHeader:
    """Patient, study and series attributes shared by every slice of a series."""

    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    patient_id: str = "TEST001"
    patient_name: str = "Synthetic^Test"
    study_date: dt.date = dt.date(2024, 1, 1)
    study_time: str = "120000"
    accession_number: str = "A1"
    kernel: str = "B30f"
    description: str = "Thorax 1.0 B30f"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")


def ct_slice(
    hu: np.ndarray,
    index: int,
    position: Sequence[float],
    header: CtHeader,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    orientation: Sequence[float] = AXIAL,
    slope: float = 1.0,
    intercept: float = -1024.0,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """One CT Image Storage dataset for a (y, x) slice of HU values (int16 stored values).

    ``spacing`` is (x, y, z) in mm, the slice thickness being z.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    sop_uid = sop_instance_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = header.study_uid
    ds.SeriesInstanceUID = header.series_uid
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = header.study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = header.study_time
    ds.StudyID = "1"
    ds.AccessionNumber = header.accession_number
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.Manufacturer = "icibenefit-tests"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.AcquisitionNumber = 1
    ds.SeriesDescription = header.description
    ds.ConvolutionKernel = header.kernel
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.ImageType = list(header.image_type)
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
    ds.SliceThickness = float(spacing[2])
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.RescaleType = "HU"
    ds.KVP = 120
    ds.PixelData = np.round((hu - intercept) / slope).astype("<i2").tobytes()
    return ds


def ct_series(
    hu: np.ndarray,
    *,
    header: CtHeader | None = None,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (-100.0, -120.0, 50.0),
    z_positions: Sequence[float] | None = None,
    orientation: Sequence[float] = AXIAL,
    slope: float = 1.0,
    intercept: float = -1024.0,
    stable_uids: bool = False,
    shuffle_seed: int | None = 1,
) -> list[Dataset]:
    """Encode an HU volume (z, y, x) as a CT series, one dataset per slice.

    ``stable_uids`` derives the SOP Instance UIDs from the series UID (same
    input, same objects).  Slices are returned shuffled (when ``shuffle_seed``
    is set) so readers must sort.
    """
    header = header or CtHeader()
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    if z_positions is None:
        z_positions = [k * spacing[2] for k in range(hu.shape[0])]
    datasets = [
        ct_slice(
            hu[k],
            k,
            np.asarray(origin) + normal * z_positions[k],
            header,
            spacing=spacing,
            orientation=orientation,
            slope=slope,
            intercept=intercept,
            sop_instance_uid=(
                generate_uid(entropy_srcs=[header.series_uid, str(k)]) if stable_uids else None
            ),
        )
        for k in range(hu.shape[0])
    ]
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(datasets))
        datasets = [datasets[i] for i in order]
    return datasets


def sphere_hu(
    shape: tuple[int, int, int],
    centre_index: tuple[float, float, float],
    radius_vox: float,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    inside: float = 40.0,
    outside: float = -800.0,
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (HU array, mask) in (z, y, x) order; radius in x-voxel units times x spacing."""
    zz, yy, xx = np.indices(shape, dtype=np.float64)
    cz, cy, cx = centre_index
    sx, sy, sz = spacing
    r_mm = radius_vox * sx
    dist = np.sqrt(((xx - cx) * sx) ** 2 + ((yy - cy) * sy) ** 2 + ((zz - cz) * sz) ** 2)
    mask = dist <= r_mm
    hu = np.where(mask, inside, outside).astype(np.float64)
    if noise:
        hu += np.random.default_rng(seed).normal(0.0, noise, size=shape)
    return hu, mask


def sort_by_position(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Sort slices along their normal (the order the mask array uses)."""
    orientation = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(datasets, key=lambda ds: float(np.dot(normal, ds.ImagePositionPatient)))


def seg_from_mask(
    source: Sequence[Dataset],
    masks: dict[str, np.ndarray],
    *,
    fractional: bool = False,
    stable_uids: bool = False,
) -> hd.seg.Segmentation:
    """A DICOM SEG with one segment per named mask (each (z, y, x), sorted source order).

    Binary by default; ``fractional`` stores the masks' float values (0..1) as
    probabilities.  ``stable_uids`` derives the SEG's UIDs from the source series.
    """
    ordered = sort_by_position(source)
    descriptions = []
    arrays = []
    for number, (label, mask) in enumerate(masks.items(), start=1):
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=hd.sr.CodedConcept(
                    "49755003", "SCT", "Morphologically Altered Structure"
                ),
                segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        )
        arrays.append(mask.astype(np.float32) if fractional else mask.astype(np.uint8))
    source_series = str(ordered[0].SeriesInstanceUID)
    return hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=np.stack(arrays, axis=-1),
        segmentation_type=(
            hd.seg.SegmentationTypeValues.FRACTIONAL
            if fractional
            else hd.seg.SegmentationTypeValues.BINARY
        ),
        segment_descriptions=descriptions,
        series_instance_uid=(
            generate_uid(entropy_srcs=[source_series, "seg-series"])
            if stable_uids
            else generate_uid()
        ),
        series_number=100,
        sop_instance_uid=(
            generate_uid(entropy_srcs=[source_series, "seg"]) if stable_uids else generate_uid()
        ),
        instance_number=1,
        manufacturer="icibenefit-tests",
        manufacturer_model_name="factory",
        software_versions="0",
        device_serial_number="0",
    )


def rtstruct_from_mask(
    source: Sequence[Dataset],
    masks: dict[str, np.ndarray],
    *,
    frame_of_reference_uid: str | None = None,
) -> Dataset:
    """An RT Structure Set whose closed planar contours trace each mask (marching squares)."""
    ordered = sort_by_position(source)
    first = ordered[0]
    orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
    row, col = orientation[:3], orientation[3:]
    dr, dc = (float(v) for v in first.PixelSpacing)  # row spacing (y), column spacing (x)
    for_uid = frame_of_reference_uid or first.FrameOfReferenceUID

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = RTStructureSetStorage
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "RTSTRUCT"
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
    ):
        setattr(ds, keyword, getattr(first, keyword))
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 200
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "tumour"
    ds.StructureSetDate = dt.date(2024, 1, 1).strftime("%Y%m%d")
    ds.StructureSetTime = "120000"
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = DicomSequence([_image_ref(image) for image in ordered])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = for_uid
    for_ref.RTReferencedStudySequence = DicomSequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([for_ref])

    rois, contours, observations = [], [], []
    for number, (label, mask) in enumerate(masks.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = for_uid
        roi.ROIName = label
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        contour_items = []
        for k, image in enumerate(ordered):
            plane = np.pad(mask[k].astype(float), 1)
            position = np.asarray(image.ImagePositionPatient, dtype=float)
            for path in measure.find_contours(plane, 0.5):
                r, c = path[:, 0] - 1.0, path[:, 1] - 1.0
                points = position + np.outer(c * dc, row) + np.outer(r * dr, col)
                item = Dataset()
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(points)
                item.ContourData = [float(f"{v:.4f}") for v in points.ravel()]
                item.ContourImageSequence = DicomSequence([_image_ref(image)])
                contour_items.append(item)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = [255, 0, 0]
        roi_contour.ContourSequence = DicomSequence(contour_items)
        contours.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = "GTV"
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    return ds


def _image_ref(image: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.SOPClassUID
    ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return ref


def image_from_array(
    array: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float]
) -> sitk.Image:
    """Axial SimpleITK image from a (z, y, x) array."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image
