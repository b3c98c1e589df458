"""The tumour as an RT Structure Set, built by hand with pydicom.

Libraries checked for a builder: pydicom 3.0 (none), highdicom 0.28 (SEG, SR,
KOS, PM, SC, annotations -- no RT Structure Set) and rt-utils' RTStructBuilder
(not a dependency here and it stamps wall-clock dates).  So the IOD modules
(Patient, General Study, RT Series, General Equipment, Frame of Reference,
Structure Set, ROI
Contour, RT ROI Observations, SOP Common) are filled here, and only the
contour tracing is delegated to scikit-image's marching squares.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage
from skimage import measure

from icibenefit.synth.ct import MANUFACTURER, SOFTWARE_VERSION
from icibenefit.synth.segmentation import SEGMENT_LABEL

#: Retired "Detached Study Management" SOP class: the value PS3.3 C.8.8.5 and
#: every treatment-planning system put in RT Referenced Study Sequence.  A literal:
#: neither pydicom.uid nor pynetdicom.sop_class has a constant for this retired class.
_STUDY_COMPONENT_CLASS = "1.2.840.10008.3.1.2.3.1"


def build_rtstruct(
    ct_slices: list[Dataset],
    mask: np.ndarray,
    series_uid: str,
    sop_instance_uid: str,
    when: dt.datetime,
) -> Dataset:
    """Build an RTSTRUCT with one ROI ("Tumour", GTV) contoured slice by slice.

    Contours are traced at the 0.5 iso-line of the binary mask (marching
    squares), so the polygon runs along voxel edges midway between inside and
    outside voxels; re-rasterising it gives back the mask up to boundary
    voxels.  Points are in patient millimetres (LPS) as PS3.3 requires.
    """
    first = ct_slices[0]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = ds.StructureSetDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.StructureSetTime = when.strftime("%H%M%S")
    for keyword in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
        "ReferringPhysicianName", "StudyID", "StudyDescription",
    ):  # fmt: skip
        setattr(ds, keyword, getattr(first, keyword))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 301
    ds.SeriesDate = when.strftime("%Y%m%d")
    ds.SeriesTime = when.strftime("%H%M%S")
    ds.SeriesDescription = "Tumour contours"
    ds.OperatorsName = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "Synthetic ground truth"
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.InstanceNumber = 1
    # Frame of Reference module: part of the RT Structure Set IOD since 2021
    # (PS3.3 A.19.3); dciodvfy requires it.
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = "TUMOUR"
    ds.ReferencedFrameOfReferenceSequence = Sequence([_referenced_frame(ct_slices)])
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
    roi.ROIName = SEGMENT_LABEL
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ROIDisplayColor = [255, 0, 0]
    roi_contour.ContourSequence = Sequence(_contours(ct_slices, mask))
    ds.ROIContourSequence = Sequence([roi_contour])
    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "GTV"
    observation.ROIInterpreter = ""
    ds.RTROIObservationsSequence = Sequence([observation])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _image_reference(ct: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ct.SOPClassUID
    item.ReferencedSOPInstanceUID = ct.SOPInstanceUID
    return item


def _referenced_frame(ct_slices: list[Dataset]) -> Dataset:
    first = ct_slices[0]
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = Sequence([_image_reference(ct) for ct in ct_slices])
    study = Dataset()
    study.ReferencedSOPClassUID = _STUDY_COMPONENT_CLASS
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    return frame


def _contours(ct_slices: list[Dataset], mask: np.ndarray) -> list[Dataset]:
    contours = []
    for k, ct in enumerate(ct_slices):
        if not mask[k].any():
            continue
        x0, y0, z = (float(v) for v in ct.ImagePositionPatient)
        row_mm, col_mm = (float(v) for v in ct.PixelSpacing)
        # Pad so contours touching the image border still close.
        padded = np.pad(mask[k].astype(np.float32), 1)
        for path in measure.find_contours(padded, 0.5):
            rows, cols = path[:-1, 0] - 1, path[:-1, 1] - 1  # last point repeats the first
            if len(rows) < 3:
                continue
            points = np.column_stack(
                [x0 + cols * col_mm, y0 + rows * row_mm, np.full_like(rows, z)]
            )
            item = Dataset()
            item.ContourImageSequence = Sequence([_image_reference(ct)])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(points)
            item.ContourData = [f"{v:.2f}" for v in points.ravel()]
            contours.append(item)
    return contours
