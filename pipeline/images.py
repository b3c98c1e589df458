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

The grid is canonical: x follows the DICOM row direction (increasing column
index), y the column direction, z the slice normal (row x column), with slices
sorted by their position along that normal.  The origin is the
ImagePositionPatient of the first slice, so every voxel centre is exactly where
the DICOM header says it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from icibenefit.errors import DicomInputError, GeometryError

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


def slice_normal(ds: Dataset) -> np.ndarray:
    """Unit normal of the image plane (row cosine x column cosine)."""
    orientation = _orientation(ds)
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
    skipped = tuple(f"skipped localizer {ds.SOPInstanceUID}" for ds in datasets if is_localizer(ds))
    images = [ds for ds in datasets if not is_localizer(ds)]
    if not images:
        raise DicomInputError("the series holds only localizer images")
    first = images[0]
    _check_same_series(images)
    if require_axial and not is_axial(first):
        raise GeometryError(
            f"series {first.SeriesInstanceUID} is not axial "
            f"(ImageOrientationPatient {list(first.ImageOrientationPatient)})"
        )
    normal = slice_normal(first)
    images.sort(key=lambda ds: float(np.dot(normal, _position(ds))))
    positions = np.array([_position(ds) for ds in images])
    slice_spacing = _regular_slice_spacing(positions, normal, spacing_tolerance)

    array = np.stack([_hu_pixels(ds) for ds in images])
    image = sitk.GetImageFromArray(array)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    orientation = _orientation(first)
    image.SetSpacing((column_spacing, row_spacing, slice_spacing))
    image.SetOrigin(tuple(float(v) for v in positions[0]))
    direction = np.column_stack([orientation[:3], orientation[3:], normal])
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return CtVolume(
        image=image,
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in images),
        skipped=skipped,
    )


def _orientation(ds: Dataset) -> np.ndarray:
    if "ImageOrientationPatient" not in ds:
        raise GeometryError(f"instance {ds.SOPInstanceUID} has no ImageOrientationPatient")
    return np.asarray(ds.ImageOrientationPatient, dtype=float)


def _position(ds: Dataset) -> np.ndarray:
    if "ImagePositionPatient" not in ds:
        raise GeometryError(f"instance {ds.SOPInstanceUID} has no ImagePositionPatient")
    return np.asarray(ds.ImagePositionPatient, dtype=float)


def _check_same_series(images: Sequence[Dataset]) -> None:
    first = images[0]
    if first.get("Modality") != "CT":
        raise DicomInputError(
            f"series {first.SeriesInstanceUID} is {first.get('Modality')}, not CT"
        )
    for ds in images:
        if ds.SeriesInstanceUID != first.SeriesInstanceUID:
            raise DicomInputError("instances of several series were given as one series")
        if "PixelData" not in ds:
            raise DicomInputError(f"instance {ds.SOPInstanceUID} has no pixel data")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise GeometryError("slices of the series have different matrix sizes")
        if not np.allclose(_orientation(ds), _orientation(first), atol=1e-4):
            raise GeometryError("slices of the series have different orientations")
        if not np.allclose(
            np.asarray(ds.PixelSpacing, float), np.asarray(first.PixelSpacing, float), atol=1e-4
        ):
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


def _hu_pixels(ds: Dataset) -> np.ndarray:
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for undecodable data
        raise DicomInputError(
            f"cannot decode pixel data of {ds.SOPInstanceUID} "
            f"(transfer syntax {ds.file_meta.TransferSyntaxUID if 'file_meta' in ds else '?'}): "
            f"{exc}"
        ) from exc
    return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)


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
    kernel = first.get("ConvolutionKernel", "")
    if not isinstance(kernel, str):  # multi-valued kernels (e.g. ["FC13", "AIDR 3D"])
        kernel = "\\".join(str(value) for value in kernel)
    thickness = first.get("SliceThickness")
    return SeriesSummary(
        series_uid=str(first.SeriesInstanceUID),
        study_uid=str(first.StudyInstanceUID),
        modality=str(first.get("Modality", "")),
        n_images=len(images),
        series_description=str(first.get("SeriesDescription", "")),
        convolution_kernel=kernel,
        slice_thickness_mm=None if thickness in (None, "") else float(thickness),
        axial=is_axial(first) if "ImageOrientationPatient" in first else None,
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
    default the kernel decides before the slice thickness.
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
