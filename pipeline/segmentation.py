"""DICOM SEG and RTSTRUCT -> binary tumour mask on the CT grid.

SEG objects are read with highdicom (``Segmentation.from_dataset`` /
``segread``) and put on the CT grid with ``highdicom.Volume.match_geometry``,
which only permutes, flips, pads and crops: a SEG that would need resampling
is a geometry mismatch, not something to interpolate silently.

RTSTRUCT contours are rasterised by hand because no installed library does it
(checked: highdicom has no RT Structure Set support, SimpleITK no polygon fill,
rt-utils/plastimatch are not installed); each closed planar contour is mapped
to continuous voxel indices with the CT's direction/spacing/origin and filled
with ``skimage.draw.polygon`` (pixel centres inside the polygon).  Several
contours on one slice are combined with XOR, the even-odd rule DICOM uses for
holes (PS3.3 C.8.8.6.3).

When a study has several segments/ROIs the primary tumour is the one whose
label matches a configured name (case-insensitive), else the largest, as in
the paper ("the largest lesion was considered if a patient had an ambiguous
primary tumor").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import RTStructureSetStorage, SegmentationStorage
from skimage.draw import polygon as fill_polygon

from icibenefit.errors import DicomInputError, GeometryError
from icibenefit.pipeline.images import CtVolume

#: Labels taken as "the primary tumour" when several segments exist.
DEFAULT_PRIMARY_LABELS: tuple[str, ...] = (
    "primary tumour",
    "primary tumor",
    "primary",
    "gtv primary",
    "gtvp",
)

#: A contour may lie this far (in slices) off a CT slice centre before it is a mismatch.
CONTOUR_SLICE_TOLERANCE = 0.1


@dataclass(frozen=True)
class TumourMask:
    """A binary mask (UInt8 0/1) on the CT grid, with where it came from.

    ``segment_number`` is the SEG segment number or the RTSTRUCT ROI number.
    """

    mask: sitk.Image
    kind: Literal["SEG", "RTSTRUCT"]
    sop_instance_uid: str
    sop_class_uid: str
    segment_number: int
    label: str
    voxel_count: int
    decisions: tuple[str, ...] = ()


def load_tumour_mask(
    source: Dataset | str | os.PathLike[str],
    ct: CtVolume,
    *,
    primary_labels: Sequence[str] = DEFAULT_PRIMARY_LABELS,
) -> TumourMask:
    """Read a SEG or RTSTRUCT and return the primary tumour's mask on ``ct``'s grid.

    Raises
    ------
    DicomInputError
        Neither SEG nor RTSTRUCT, no segment, or an empty tumour.
    GeometryError
        Different frame of reference, or a grid that cannot be matched to the CT.
    """
    ds = source if isinstance(source, Dataset) else pydicom.dcmread(os.fspath(source))
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == SegmentationStorage:
        return mask_from_seg(ds, ct, primary_labels=primary_labels)
    if sop_class == RTStructureSetStorage:
        return mask_from_rtstruct(ds, ct, primary_labels=primary_labels)
    raise DicomInputError(f"SOP class {sop_class} is neither a DICOM SEG nor an RT Structure Set")


def mask_from_seg(
    seg: Dataset | hd.seg.Segmentation,
    ct: CtVolume,
    *,
    primary_labels: Sequence[str] = DEFAULT_PRIMARY_LABELS,
) -> TumourMask:
    """Rasterise the primary segment of a DICOM SEG onto the CT grid."""
    if not isinstance(seg, hd.seg.Segmentation):
        seg = hd.seg.Segmentation.from_dataset(seg, copy=False)
    _check_frame_of_reference(str(seg.get("FrameOfReferenceUID", "")), ct, "SEG")
    numbers = list(seg.segment_numbers)
    if not numbers:
        raise DicomInputError(f"SEG {seg.SOPInstanceUID} holds no segment")
    labels = {n: str(seg.get_segment_description(n).segment_label) for n in numbers}
    reference = hd.Volume.from_simpleitk(ct.image)
    # Fractional SEGs (probability/occupancy, rescaled to 0..1 by highdicom) are
    # binarised at 0.5; binary and label-map SEGs hold 0/1 (or the segment number).
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    threshold = 0.5 if fractional else 1e-9
    arrays: dict[int, np.ndarray] = {}
    for number in numbers:
        volume = seg.get_volume(segment_numbers=[number]).squeeze_channel()
        try:
            matched = volume.match_geometry(reference)
        except RuntimeError as exc:
            raise GeometryError(
                f"SEG {seg.SOPInstanceUID} segment {number} does not lie on the CT grid of "
                f"series {ct.series_uid}: {exc}"
            ) from exc
        arrays[number] = np.asarray(matched.array) >= threshold
    chosen, decisions = _choose_primary(
        labels, {n: int(a.sum()) for n, a in arrays.items()}, primary_labels, "segment"
    )
    mask = reference.with_array(arrays[chosen].astype(np.uint8)).to_simpleitk()
    mask.CopyInformation(ct.image)
    return _result(mask, "SEG", seg, chosen, labels[chosen], decisions)


def mask_from_rtstruct(
    rtstruct: Dataset,
    ct: CtVolume,
    *,
    primary_labels: Sequence[str] = DEFAULT_PRIMARY_LABELS,
) -> TumourMask:
    """Rasterise the primary ROI of an RT Structure Set onto the CT grid."""
    names = {
        int(roi.ROINumber): (
            str(roi.get("ROIName", "")),
            str(roi.get("ReferencedFrameOfReferenceUID", "")),
        )
        for roi in rtstruct.get("StructureSetROISequence", [])
    }
    arrays: dict[int, np.ndarray] = {}
    for roi_contour in rtstruct.get("ROIContourSequence", []):
        number = int(roi_contour.ReferencedROINumber)
        if number not in names:
            raise DicomInputError(
                f"RTSTRUCT ROI {number} is not declared in StructureSetROISequence"
            )
        _check_frame_of_reference(names[number][1], ct, f"RTSTRUCT ROI {number}")
        arrays[number] = rasterise_contours(roi_contour.get("ContourSequence", []), ct.image)
    if not arrays:
        raise DicomInputError(f"RTSTRUCT {rtstruct.SOPInstanceUID} holds no contoured ROI")
    labels = {n: names[n][0] for n in arrays}
    chosen, decisions = _choose_primary(
        labels, {n: int(a.sum()) for n, a in arrays.items()}, primary_labels, "ROI"
    )
    mask = sitk.GetImageFromArray(arrays[chosen].astype(np.uint8))
    mask.CopyInformation(ct.image)
    return _result(mask, "RTSTRUCT", rtstruct, chosen, labels[chosen], decisions)


def rasterise_contours(contours: Sequence[Dataset], reference: sitk.Image) -> np.ndarray:
    """Fill closed planar contours into a boolean (z, y, x) array on ``reference``'s grid.

    Raises
    ------
    GeometryError
        A contour lies between slices, outside the volume, or is not planar.
    """
    size_x, size_y, size_z = reference.GetSize()
    to_index = _physical_to_index(reference)
    array = np.zeros((size_z, size_y, size_x), dtype=bool)
    for contour in contours:
        if contour.get("ContourGeometricType", "CLOSED_PLANAR") == "POINT":
            continue
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        index = to_index(points)
        z = index[:, 2]
        slice_index = round(float(np.mean(z)))
        if (
            np.ptp(z) > CONTOUR_SLICE_TOLERANCE
            or abs(z.mean() - slice_index) > CONTOUR_SLICE_TOLERANCE
        ):
            raise GeometryError(
                f"a contour lies between CT slices (slice index {z.mean():.2f}): "
                "the structure set was drawn on another grid"
            )
        margin = 0.5 + 1e-6
        if (
            not (0 <= slice_index < size_z)
            or np.any(index[:, 0] < -margin)
            or np.any(index[:, 0] > size_x - 1 + margin)
            or np.any(index[:, 1] < -margin)
            or np.any(index[:, 1] > size_y - 1 + margin)
        ):
            raise GeometryError("a contour lies outside the CT volume")
        rows, columns = fill_polygon(index[:, 1], index[:, 0], shape=(size_y, size_x))
        filled = np.zeros((size_y, size_x), dtype=bool)
        filled[rows, columns] = True
        array[slice_index] ^= filled
    return array


def _physical_to_index(reference: sitk.Image) -> Callable[[np.ndarray], np.ndarray]:
    direction = np.asarray(reference.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(reference.GetSpacing(), dtype=float)
    origin = np.asarray(reference.GetOrigin(), dtype=float)
    inverse = np.linalg.inv(direction * spacing)  # columns scaled by spacing

    def to_index(points: np.ndarray) -> np.ndarray:
        index: np.ndarray = (points - origin) @ inverse.T
        return index

    return to_index


def _check_frame_of_reference(uid: str, ct: CtVolume, what: str) -> None:
    if not uid or uid != ct.frame_of_reference_uid:
        raise GeometryError(
            f"{what} frame of reference {uid or '(none)'} differs from the CT's "
            f"{ct.frame_of_reference_uid or '(none)'} (series {ct.series_uid})"
        )


def _choose_primary(
    labels: dict[int, str],
    voxel_counts: dict[int, int],
    primary_labels: Sequence[str],
    noun: str,
) -> tuple[int, tuple[str, ...]]:
    wanted = [label.strip().lower() for label in primary_labels]
    non_empty = [n for n in labels if voxel_counts[n] > 0]
    if not non_empty:
        raise DicomInputError(f"every {noun} is empty on the CT grid: no tumour to measure")
    if len(non_empty) == 1:
        number = non_empty[0]
        return number, (f"{noun} {number} '{labels[number]}' is the only non-empty {noun}",)
    for label in wanted:
        for number in sorted(non_empty):
            if labels[number].strip().lower() == label:
                return number, (
                    f"{noun} {number} '{labels[number]}' chosen by its primary-tumour label",
                )
    number = max(sorted(non_empty), key=lambda n: voxel_counts[n])
    return number, (
        f"no {noun} labelled as primary tumour among {sorted(labels.values())}; "
        f"the largest, {noun} {number} '{labels[number]}' ({voxel_counts[number]} voxels), chosen",
    )


def _result(
    mask: sitk.Image,
    kind: Literal["SEG", "RTSTRUCT"],
    ds: Dataset,
    number: int,
    label: str,
    decisions: tuple[str, ...],
) -> TumourMask:
    return TumourMask(
        mask=mask,
        kind=kind,
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        segment_number=number,
        label=label,
        voxel_count=int(sitk.GetArrayViewFromImage(mask).sum()),
        decisions=decisions,
    )
