"""The choice of the one CT series of a study that features are computed on.

A study often holds several reconstructions of the same acquisition (soft
tissue and lung kernels, thin and thick slices) plus localizers and
reformats; radiomics texture depends strongly on the kernel and the slice
thickness, so which series feeds the features is a rule of the method, not an
accident of file order.  The choice reads headers only (no pixel data) and is
kept apart from :mod:`icibenefit.pipeline.images`, which turns the chosen
series into a volume: the timeline (:mod:`icibenefit.pipeline.timeline`)
chooses among every series of a study before any of them is decoded, and the
operator configures the rules (``series_*`` settings) without touching volume
loading.

Every candidate gets one sentence saying why it was chosen, passed over or
excluded, so a report can show the decision.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydicom.dataset import Dataset

from icibenefit.errors import DicomInputError
from icibenefit.pipeline.images import header_value, is_axial, is_localizer

if TYPE_CHECKING:
    from icibenefit.settings import Settings


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
