"""CT series -> SimpleITK volume in LPS (HU, float32).

Volumes are assembled by hand from pydicom datasets rather than with
``highdicom.get_volume_from_series`` or ``SimpleITK.ImageSeriesReader`` (both
checked): highdicom orders its axes slice-first with the slice axis reversed,
which is not the (x = column, y = row, z = slice) grid that pyradiomics'
``force2Ddimension: 0`` and the CNN patches assume, and reports irregular
spacing only as a bare ``ValueError``; ``ImageSeriesReader`` needs files on disk
and merely warns about irregular spacing.  Pixel decoding (RLE, JPEG lossless,
JPEG-LS, JPEG 2000) is pydicom's, through its numpy, pylibjpeg and pyjpegls
handlers; the Modality LUT (rescale slope/intercept) is pydicom's
``apply_modality_lut``.

Multi-frame CT (Enhanced CT and Legacy Converted Enhanced CT) is split into
its frames, each taking position, orientation, pixel spacing and rescale from
the per-frame or shared functional groups, and then goes through the same
sorting and spacing checks as a single-frame series.

The grid is canonical: x follows the DICOM row direction (increasing column
index), y the column direction, z the slice normal (row x column), with slices
sorted by their position along that normal.  The origin is the
ImagePositionPatient of the first slice, so every voxel centre is exactly where
the DICOM header says it is.

Which of a study's series to load is decided from headers alone by
:mod:`icibenefit.pipeline.series_selection`; the header helpers it shares
(:func:`header_value`, :func:`is_localizer`, :func:`is_axial`) live here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut

from icibenefit.errors import DicomInputError, GeometryError

#: |normal . z| above this counts as axial (allows gantry-tilted axials up to ~25 degrees).
AXIAL_COSINE = 0.9

DicomSource = Dataset | str | os.PathLike[str]


@dataclass(frozen=True)
class CtVolume:
    """A CT volume with the identifiers needed to check and report what it came from.

    Attributes
    ----------
    image
        Float32 Hounsfield units, LPS physical space.
    sop_instance_uids
        The CT images used, in slice (z index) order.
    skipped
        Human-readable notes on instances left out (e.g. localizers).
    """

    image: sitk.Image
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: tuple[str, ...]
    skipped: tuple[str, ...] = ()


def read_datasets(sources: Iterable[DicomSource]) -> list[Dataset]:
    """Return datasets, reading the given paths with pydicom (datasets pass through)."""
    return [
        source if isinstance(source, Dataset) else pydicom.dcmread(os.fspath(source))
        for source in sources
    ]


def is_localizer(ds: Dataset) -> bool:
    """Whether the image is a scout/localizer (ImageType value 3 LOCALIZER)."""
    return "LOCALIZER" in [str(value).upper() for value in ds.get("ImageType", [])]


def header_value(ds: Dataset, keyword: str, sequence: str) -> Any:
    """``keyword`` at the top level, else in the shared or first per-frame functional group.

    Multi-frame (Enhanced) CT keeps geometry and reconstruction attributes in
    functional-group ``sequence`` items (e.g. PixelMeasuresSequence) rather than
    at the top level; header-only code (series summaries) reads them here.
    The value is pydicom's, whose type depends on the attribute's VR (hence
    ``Any``); None when the attribute is nowhere.
    """
    if keyword in ds:
        return ds.get(keyword)
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if groups in ds and ds[groups].value:
            group = ds[groups].value[0]
            if sequence in group and group[sequence].value and keyword in group[sequence].value[0]:
                return group[sequence].value[0].get(keyword)
    return None


def slice_normal(ds: Dataset) -> np.ndarray:
    """Unit normal of the image plane (row cosine x column cosine)."""
    value = header_value(ds, "ImageOrientationPatient", "PlaneOrientationSequence")
    if value is None:
        raise GeometryError(f"instance {ds.get('SOPInstanceUID', '?')} has no image orientation")
    orientation = np.asarray(value, dtype=float)
    normal: np.ndarray = np.cross(orientation[:3], orientation[3:])
    unit: np.ndarray = normal / np.linalg.norm(normal)
    return unit


def is_axial(ds: Dataset) -> bool:
    """Whether the slice plane is (close to) axial; see :data:`AXIAL_COSINE`."""
    return abs(float(slice_normal(ds)[2])) >= AXIAL_COSINE


def load_ct_volume(
    sources: Iterable[DicomSource],
    *,
    spacing_tolerance: float = 0.01,
    require_axial: bool = True,
) -> CtVolume:
    """Build the HU volume of one CT series.

    Parameters
    ----------
    sources
        The instances of one series (datasets or file paths), in any order.
        Localizers among them are skipped and noted in ``CtVolume.skipped``.
    spacing_tolerance
        Largest accepted deviation of any slice gap from the median gap, as a
        fraction of the median (1 %: scanners write positions rounded to a few
        micrometres; a missing slice is a 100 % deviation).
    require_axial
        Refuse non-axial series: the method's 2D features and CNN patches are
        defined on axial slices.

    Raises
    ------
    DicomInputError
        Not CT, several series mixed, no pixel data, no usable image.
    GeometryError
        Fewer than two slices, mixed orientation or matrix size, duplicate
        positions, missing or irregular slice spacing, gantry tilt, non-axial.
    """
    datasets = read_datasets(sources)
    if not datasets:
        raise DicomInputError("no CT instances given")
    frames = [frame for ds in datasets for frame in _frames(ds)]
    skipped = tuple(
        dict.fromkeys(f"skipped localizer {f.sop_instance_uid}" for f in frames if f.localizer)
    )
    images = [frame for frame in frames if not frame.localizer]
    if not images:
        raise DicomInputError("the series holds only localizer images")
    first = images[0]
    _check_same_series(images)
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    normal /= np.linalg.norm(normal)
    if require_axial and abs(float(normal[2])) < AXIAL_COSINE:
        raise GeometryError(
            f"series {first.series_uid} is not axial "
            f"(ImageOrientationPatient {[float(v) for v in first.orientation]})"
        )
    images.sort(key=lambda frame: float(np.dot(normal, frame.position)))
    positions = np.array([frame.position for frame in images])
    slice_spacing = _regular_slice_spacing(positions, normal, spacing_tolerance)

    image = sitk.GetImageFromArray(np.stack([frame.hu() for frame in images]))
    row_spacing, column_spacing = first.pixel_spacing
    image.SetSpacing((column_spacing, row_spacing, slice_spacing))
    image.SetOrigin(tuple(float(v) for v in positions[0]))
    direction = np.column_stack([first.orientation[:3], first.orientation[3:], normal])
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return CtVolume(
        image=image,
        study_uid=first.study_uid,
        series_uid=first.series_uid,
        frame_of_reference_uid=first.frame_of_reference_uid,
        sop_instance_uids=tuple(dict.fromkeys(frame.sop_instance_uid for frame in images)),
        skipped=skipped,
    )


@dataclass(frozen=True)
class _Frame:
    """One 2D image: a single-frame CT instance, or one frame of an (Enhanced) multi-frame CT."""

    sop_instance_uid: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    modality: str
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int]
    localizer: bool
    hu: Callable[[], np.ndarray]


def _frames(ds: Dataset) -> list[_Frame]:
    """Split an instance into frames; multi-frame geometry comes from its functional groups."""
    uid = str(ds.SOPInstanceUID)
    if "PixelData" not in ds:
        raise DicomInputError(f"instance {uid} has no pixel data")
    shape = (int(ds.Rows), int(ds.Columns))
    common: dict[str, Any] = {
        "sop_instance_uid": uid,
        "study_uid": str(ds.StudyInstanceUID),
        "series_uid": str(ds.SeriesInstanceUID),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "modality": str(ds.get("Modality", "")),
        "shape": shape,
    }
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return [
            _Frame(
                **common,
                position=_required(ds, "ImagePositionPatient", uid),
                orientation=_required(ds, "ImageOrientationPatient", uid),
                pixel_spacing=_spacing(_required(ds, "PixelSpacing", uid)),
                localizer=is_localizer(ds),
                hu=lambda: _hu_pixels(ds),
            )
        ]
    shared = (
        ds.SharedFunctionalGroupsSequence[0]
        if "SharedFunctionalGroupsSequence" in ds
        else Dataset()
    )
    decoded: list[np.ndarray] = []

    def frame_hu(index: int, slope: float, intercept: float) -> np.ndarray:
        if not decoded:  # decode every frame once, on first use
            decoded.append(np.asarray(_decode(ds)).reshape(-1, *shape))
        frame: np.ndarray = decoded[0][index]
        return frame.astype(np.float32) * np.float32(slope) + np.float32(intercept)

    frames = []
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):

        def item(sequence: str, keyword: str, group: Dataset = group) -> Any:
            for source in (group, shared):
                if sequence in source and keyword in source[sequence].value[0]:
                    return source[sequence].value[0].get(keyword)
            return None

        where = f"{uid} frame {index + 1}"
        position, orientation = (
            item("PlanePositionSequence", "ImagePositionPatient"),
            item("PlaneOrientationSequence", "ImageOrientationPatient"),
        )
        spacing = item("PixelMeasuresSequence", "PixelSpacing")
        if position is None or orientation is None or spacing is None:
            raise GeometryError(f"{where} lacks plane position, orientation or pixel spacing")
        frame_type = item("CTImageFrameTypeSequence", "FrameType") or ds.get("ImageType", [])
        slope = item("PixelValueTransformationSequence", "RescaleSlope")
        intercept = item("PixelValueTransformationSequence", "RescaleIntercept")
        frames.append(
            _Frame(
                **common,
                position=np.asarray(position, dtype=float),
                orientation=np.asarray(orientation, dtype=float),
                pixel_spacing=_spacing(spacing),
                localizer="LOCALIZER" in [str(v).upper() for v in frame_type],
                hu=functools.partial(
                    frame_hu,
                    index,
                    1.0 if slope is None else float(slope),
                    0.0 if intercept is None else float(intercept),
                ),
            )
        )
    return frames


def _required(ds: Dataset, keyword: str, uid: str) -> np.ndarray:
    if keyword not in ds:
        raise GeometryError(f"instance {uid} has no {keyword}")
    return np.asarray(ds.get(keyword), dtype=float)


def _spacing(values: Any) -> tuple[float, float]:
    row, column = (float(v) for v in values)
    return row, column


def _check_same_series(images: Sequence[_Frame]) -> None:
    first = images[0]
    if first.modality != "CT":
        raise DicomInputError(f"series {first.series_uid} is {first.modality or 'unknown'}, not CT")
    for frame in images:
        if frame.series_uid != first.series_uid:
            raise DicomInputError("instances of several series were given as one series")
        if frame.shape != first.shape:
            raise GeometryError("slices of the series have different matrix sizes")
        if not np.allclose(frame.orientation, first.orientation, atol=1e-4):
            raise GeometryError("slices of the series have different orientations")
        if not np.allclose(frame.pixel_spacing, first.pixel_spacing, atol=1e-4):
            raise GeometryError("slices of the series have different pixel spacings")


def _regular_slice_spacing(positions: np.ndarray, normal: np.ndarray, tolerance: float) -> float:
    """Return the slice gap, refusing what cannot be one regular grid."""
    if len(positions) < 2:
        raise GeometryError("a single slice has no slice spacing; a volume needs at least two")
    steps = np.diff(positions, axis=0)
    gaps = steps @ normal
    if np.any(gaps <= 1e-3):
        raise GeometryError("two slices share the same position (duplicate or mixed series)")
    off_normal = np.linalg.norm(steps - np.outer(gaps, normal), axis=1)
    if np.any(off_normal > 1e-2 * np.abs(gaps) + 1e-3):
        raise GeometryError(
            "slice positions do not lie along the slice normal (gantry tilt or sheared series)"
        )
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > tolerance * median:
        raise GeometryError(
            f"irregular slice spacing: gap {gaps[worst]:.3f} mm between slices {worst} and "
            f"{worst + 1}, median {median:.3f} mm (missing slice or mixed reconstructions)"
        )
    return float(np.mean(gaps))


def _decode(ds: Dataset) -> np.ndarray:
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises several types for undecodable data
        syntax = ds.file_meta.TransferSyntaxUID if "file_meta" in ds else "?"
        raise DicomInputError(
            f"cannot decode pixel data of {ds.SOPInstanceUID} (transfer syntax {syntax}): {exc}"
        ) from exc


def _hu_pixels(ds: Dataset) -> np.ndarray:
    return np.asarray(apply_modality_lut(_decode(ds), ds), dtype=np.float32)
