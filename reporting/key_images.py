"""Where the tumour is on the CT: key slice, outline and volume from a SEG.

The SR and the PDF report both show the tumour the model used at each
timepoint.  A viewer such as OHIF only places SR measurements that carry a
spatial coordinate on an image (SCOORD), and a reader of the PDF wants to see
the tumour outlined on the CT, so both need the same thing: the CT slice where
the segmented tumour is largest (the *key slice*), the tumour's outline on it
and the tumour volume.

Everything here is pure: datasets in, arrays out.  A SEG whose pixel data was
not read (``dcmread(..., stop_before_pixels=True)``) still names the CT images
its frames were derived from, so :func:`tumour_geometry` then returns the middle
of those slices, outlined by the image border and without a volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from skimage import measure

from icibenefit.errors import ReportError


@dataclass(frozen=True)
class TumourGeometry:
    """The tumour of one timepoint as the reports show it.

    Attributes
    ----------
    key_image
        The CT dataset of the key slice (the largest tumour cross-section).
    outline
        Closed polyline (first point repeated last) in DICOM image coordinates
        (column, row; (0, 0) is the top left corner of the top left pixel), as
        an SCOORD's Graphic Data wants it.  The image border when ``traced``
        is false.
    traced
        True when ``outline`` traces the segmented tumour (SEG pixel data was
        available), false when it only frames the key slice.
    volume_mm3
        Tumour volume (voxel count x voxel size), ``None`` without pixel data.
    masks
        Binary mask of the tumour per CT SOP Instance UID (only slices that
        contain tumour); empty without pixel data.
    """

    key_image: Dataset
    outline: np.ndarray
    traced: bool
    volume_mm3: float | None
    masks: dict[str, np.ndarray]


def segment_masks(seg: Dataset, segment_number: int = 1) -> dict[str, np.ndarray]:
    """Binary mask of one segment per source CT image, from the SEG's pixel data.

    Each frame of a SEG names the CT image it was derived from (Derivation
    Image Sequence) and its segment (Segment Identification Sequence, per
    frame or shared).  Fractional SEGs are thresholded at one half.  Returns
    an empty dict when the dataset carries no pixel data.
    """
    if "PixelData" not in seg:
        return {}
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if str(seg.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        maximum = float(seg.get("MaximumFractionalValue", 255))
        frames = pixels.astype(np.float32) / maximum >= 0.5
    else:
        frames = pixels.astype(bool)
    shared = seg.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    per_frame = seg.get("PerFrameFunctionalGroupsSequence", [])
    masks: dict[str, np.ndarray] = {}
    for index, frame in enumerate(frames):
        groups = per_frame[index] if index < len(per_frame) else Dataset()
        identification = groups.get("SegmentIdentificationSequence") or shared.get(
            "SegmentIdentificationSequence"
        )
        if identification and int(identification[0].ReferencedSegmentNumber) != segment_number:
            continue
        source = _source_image_uid(groups) or _source_image_uid(shared)
        if source is None or not frame.any():
            continue
        masks[source] = masks[source] | frame if source in masks else frame
    return masks


def tumour_geometry(
    images: Sequence[Dataset], seg: Dataset | None, segment_number: int = 1
) -> TumourGeometry:
    """Key slice, outline and volume of the tumour of one timepoint.

    Parameters
    ----------
    images
        The CT datasets of the timepoint (headers suffice for the SR; the PDF
        needs pixel data to draw the key image).
    seg
        The timepoint's SEG, with pixel data for a traced outline and a
        volume; ``None`` (e.g. an RTSTRUCT timepoint) gives the middle slice.
    segment_number
        The tumour's segment in ``seg``.
    """
    if not images:
        raise ReportError("no CT images to place the tumour on")
    ordered = sorted(images, key=_slice_position)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in ordered}
    masks = (
        {uid: m for uid, m in segment_masks(seg, segment_number).items() if uid in by_uid}
        if seg is not None
        else {}
    )
    if masks:
        key_uid = max(masks, key=lambda uid: (int(masks[uid].sum()), -_order(ordered, uid)))
        key = by_uid[key_uid]
        return TumourGeometry(
            key_image=key,
            outline=trace_outline(masks[key_uid]),
            traced=True,
            volume_mm3=float(sum(int(m.sum()) for m in masks.values()))
            * _voxel_volume(ordered, seg),
            masks=masks,
        )
    candidates = [uid for uid in _seg_source_uids(seg) if uid in by_uid] if seg else []
    key = by_uid[candidates[len(candidates) // 2]] if candidates else ordered[len(ordered) // 2]
    return TumourGeometry(
        key_image=key, outline=image_border(key), traced=False, volume_mm3=None, masks={}
    )


def trace_outline(mask: np.ndarray) -> np.ndarray:
    """Closed outline of the largest connected region of a 2D mask, (column, row) pairs.

    Marching squares on the zero-padded mask gives closed contours through
    pixel edges' midpoints; +0.5 moves array indices (pixel centres) to DICOM
    image coordinates, whose origin is the top left pixel's corner.
    """
    padded = np.pad(mask.astype(np.float32), 1)
    contours = measure.find_contours(padded, 0.5)
    if not contours:
        raise ReportError("empty tumour mask has no outline")
    longest = max(contours, key=len)
    simplified = measure.approximate_polygon(longest, tolerance=0.25)
    rows = simplified[:, 0] - 1 + 0.5
    columns = simplified[:, 1] - 1 + 0.5
    outline = np.stack([columns, rows], axis=1).astype(np.float32)
    if not np.array_equal(outline[0], outline[-1]):
        outline = np.vstack([outline, outline[:1]])
    return outline


def image_border(image: Dataset) -> np.ndarray:
    """The whole image as a closed polyline: the region of a slice without a traced tumour."""
    columns, rows = float(image.Columns), float(image.Rows)
    return np.array(
        [[0.0, 0.0], [columns, 0.0], [columns, rows], [0.0, rows], [0.0, 0.0]], dtype=np.float32
    )


def _source_image_uid(groups: Dataset) -> str | None:
    for derivation in groups.get("DerivationImageSequence", []):
        for source in derivation.get("SourceImageSequence", []):
            return str(source.ReferencedSOPInstanceUID)
    return None


def _seg_source_uids(seg: Dataset) -> list[str]:
    """CT images named by the SEG's frames, in frame order (header only)."""
    uids = [_source_image_uid(groups) for groups in seg.get("PerFrameFunctionalGroupsSequence", [])]
    return list(dict.fromkeys(uid for uid in uids if uid is not None))


def _slice_position(image: Dataset) -> float:
    orientation = np.asarray(image.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), float)
    normal = np.cross(orientation[:3], orientation[3:])
    position = np.asarray(image.get("ImagePositionPatient", [0, 0, 0]), float)
    return float(np.dot(normal, position))


def _order(ordered: Sequence[Dataset], uid: str) -> int:
    return next(i for i, ds in enumerate(ordered) if str(ds.SOPInstanceUID) == uid)


def _voxel_volume(ordered: Sequence[Dataset], seg: Dataset | None) -> float:
    """Voxel size in mm3: CT pixel spacing times the slice spacing of the series."""
    row_spacing, column_spacing = (float(v) for v in ordered[0].PixelSpacing)
    positions = [_slice_position(ds) for ds in ordered]
    steps = np.diff(positions)
    if len(steps) and np.median(np.abs(steps)) > 0:
        spacing = float(np.median(np.abs(steps)))
    else:
        spacing = float(ordered[0].get("SliceThickness", 0) or 0)
        if not spacing and seg is not None:
            measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            spacing = float(measures.get("SpacingBetweenSlices", measures.SliceThickness))
    return row_spacing * column_spacing * spacing
