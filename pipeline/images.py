"""CT series -> SimpleITK volume in LPS (HU, float32), and the choice among a study's series.

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
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from icibenefit.errors import DicomInputError, GeometryError

if TYPE_CHECKING:
    from icibenefit.settings import Settings

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

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
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


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
        return decoded[0][index].astype(np.float32) * np.float32(slope) + np.float32(intercept)

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


# --------------------------------------------------------------------------
# Choosing a series


@dataclass(frozen=True)
class SeriesSummary:
    """What the series choice needs to know about one series (no pixel data)."""

    series_uid: str
    study_uid: str
    modality: str
    n_images: int
    series_description: str = ""
    convolution_kernel: str = ""
    slice_thickness_mm: float | None = None
    axial: bool | None = None
    localizer: bool = False
    body_part: str = ""


def summarize_series(datasets: Sequence[Dataset]) -> SeriesSummary:
    """Summarise one series from its (header-only is enough) datasets."""
    if not datasets:
        raise DicomInputError("cannot summarise an empty series")
    images = [ds for ds in datasets if not is_localizer(ds)]
    first = images[0] if images else datasets[0]
    kernel = header_value(first, "ConvolutionKernel", "CTReconstructionSequence") or ""
    if not isinstance(kernel, str):  # multi-valued kernels (e.g. ["FC13", "AIDR 3D"])
        kernel = "\\".join(str(value) for value in kernel)
    thickness = header_value(first, "SliceThickness", "PixelMeasuresSequence")
    has_orientation = (
        header_value(first, "ImageOrientationPatient", "PlaneOrientationSequence") is not None
    )
    return SeriesSummary(
        series_uid=str(first.SeriesInstanceUID),
        study_uid=str(first.StudyInstanceUID),
        modality=str(first.get("Modality", "")),
        n_images=sum(int(ds.get("NumberOfFrames") or 1) for ds in images),
        series_description=str(first.get("SeriesDescription", "")),
        convolution_kernel=kernel,
        slice_thickness_mm=None if thickness in (None, "") else float(thickness),
        axial=is_axial(first) if has_orientation else None,
        localizer=not images,
        body_part=str(first.get("BodyPartExamined", "")),
    )


@dataclass(frozen=True)
class SeriesSelectionRules:
    """Configurable rules for choosing one CT series in a study.

    Kernels are matched case-insensitively as regular expressions against the
    ConvolutionKernel (or, when empty, the SeriesDescription).  The defaults
    cover Siemens (B30f, Br40, I31f = soft; B60f, Br64, I70f = sharp), GE
    (STANDARD, SOFT vs LUNG, BONE, DETAIL), Philips (B, C vs L, YA) and Canon
    (FC0x/FC1x vs FC5x+).  The paper's CTs were "reconstructed using a standard
    kernel", and radiomics texture depends strongly on the kernel, so by
    default the kernel decides before the slice thickness.  ``min_images``
    defaults to 5, the slices one CNN patch spans.
    """

    require_axial: bool = True
    min_images: int = 5
    soft_tissue_kernels: tuple[str, ...] = (
        r"^B[rfs]?[1-4]\d",
        r"^I[rfs]?[1-4]\d",
        r"^Q[rfs]?[1-4]\d",
        r"STANDARD",
        r"SOFT",
        r"MEDIASTIN",
        r"^[BC]$",
        r"^FC[01]\d",
    )
    sharp_kernels: tuple[str, ...] = (
        r"^B[rfs]?[5-9]\d",
        r"^I[rfs]?[5-9]\d",
        r"LUNG",
        r"BONE",
        r"SHARP",
        r"DETAIL",
        r"EDGE",
        r"^L$",
        r"^Y[A-D]",
        r"^FC[5-9]\d",
    )
    priority: tuple[Literal["kernel", "thickness"], ...] = ("kernel", "thickness")

    def __post_init__(self) -> None:
        if self.min_images < 2:
            raise ValueError("min_images must be at least 2")
        if set(self.priority) - {"kernel", "thickness"} or len(set(self.priority)) != len(
            self.priority
        ):
            raise ValueError("priority holds each of 'kernel' and 'thickness' at most once")
        for pattern in self.soft_tissue_kernels + self.sharp_kernels:
            re.compile(pattern)

    @classmethod
    def from_settings(cls, settings: Settings) -> SeriesSelectionRules:
        """The operator's rules (``series_*`` settings; their defaults are this class's)."""
        return cls(
            require_axial=settings.series_require_axial,
            min_images=settings.series_min_images,
            soft_tissue_kernels=tuple(settings.series_soft_tissue_kernels),
            sharp_kernels=tuple(settings.series_sharp_kernels),
            priority=tuple(settings.series_priority),
        )

    def kernel_rank(self, summary: SeriesSummary) -> int:
        """0 = soft tissue, 1 = unknown, 2 = sharp (lung/bone)."""
        text = summary.convolution_kernel or summary.series_description
        if any(re.search(p, text, re.IGNORECASE) for p in self.soft_tissue_kernels):
            return 0
        if any(re.search(p, text, re.IGNORECASE) for p in self.sharp_kernels):
            return 2
        return 1


@dataclass(frozen=True)
class SeriesChoice:
    """The chosen series and why (one sentence per candidate)."""

    series_uid: str
    decisions: tuple[str, ...] = field(default=())


_KERNEL_WORDS = ("soft-tissue kernel", "unknown kernel", "sharp kernel")


def choose_ct_series(
    candidates: Sequence[SeriesSummary], rules: SeriesSelectionRules | None = None
) -> SeriesChoice:
    """Choose the CT series of a study that features are computed on.

    Non-CT, localizer-only, non-axial (when required) and too short series are
    excluded; the rest are ranked by ``rules.priority`` (kernel rank, then
    slice thickness by default), then by more images, then by series UID so
    the choice is deterministic.

    Raises
    ------
    DicomInputError
        When no candidate is usable; the message lists why each was excluded.
    """
    rules = rules or SeriesSelectionRules()
    decisions: list[str] = []
    usable: list[SeriesSummary] = []
    for summary in candidates:
        reason = _exclusion_reason(summary, rules)
        if reason:
            decisions.append(f"series {summary.series_uid} excluded: {reason}")
        else:
            usable.append(summary)
    if not usable:
        raise DicomInputError("no usable CT series: " + "; ".join(decisions))

    def sort_key(summary: SeriesSummary) -> tuple[float | int | str, ...]:
        keys: list[float | int | str] = []
        for criterion in rules.priority:
            if criterion == "kernel":
                keys.append(rules.kernel_rank(summary))
            else:
                thickness = summary.slice_thickness_mm
                keys.append(float("inf") if thickness is None else thickness)
        return (*keys, -summary.n_images, summary.series_uid)

    ranked = sorted(usable, key=sort_key)
    chosen = ranked[0]
    decisions.append(f"series {chosen.series_uid} chosen: {_describe(chosen, rules)}")
    decisions.extend(
        f"series {other.series_uid} not chosen: {_describe(other, rules)}" for other in ranked[1:]
    )
    return SeriesChoice(series_uid=chosen.series_uid, decisions=tuple(decisions))


def _exclusion_reason(summary: SeriesSummary, rules: SeriesSelectionRules) -> str | None:
    if summary.modality != "CT":
        return f"modality {summary.modality or 'unknown'}"
    if summary.localizer:
        return "localizer images only"
    if rules.require_axial and summary.axial is False:
        return "not axial"
    if rules.require_axial and summary.axial is None:
        return "no image orientation"
    if summary.n_images < rules.min_images:
        return f"{summary.n_images} images (< {rules.min_images})"
    return None


def _describe(summary: SeriesSummary, rules: SeriesSelectionRules) -> str:
    thickness = (
        "unknown thickness"
        if summary.slice_thickness_mm is None
        else f"{summary.slice_thickness_mm:g} mm slices"
    )
    kernel = summary.convolution_kernel or "no kernel"
    return (
        f"'{summary.series_description}', {_KERNEL_WORDS[rules.kernel_rank(summary)]} "
        f"({kernel}), {thickness}, {summary.n_images} images"
    )
