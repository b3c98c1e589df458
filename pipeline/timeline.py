"""Which CTs feed the model: baseline and up to two follow-ups (METHOD.md "Timepoints").

Input is a list of :class:`SeriesRecord` (one per CT series: what a study index
knows, no pixels) plus the treatment start T0; output is a :class:`Timeline`
whose ``decisions`` say, in sentences a report can quote, which series were
used, which were dropped and why.  :func:`records_from_headers` builds the
records from DICOM headers (e.g. read with ``stop_before_pixels``).

Rules (choices the method leaves open are marked *; the numbers and lists are
the defaults of :class:`TimelineRules`, which operators change through the
``timeline_*`` and ``series_*`` settings, see :mod:`icibenefit.pipeline.rules`):

* Baseline: the latest chest CT with ``-60 <= days from T0 <= 0`` (*a CT on
  the day of T0 counts as baseline: it precedes the first infusion).
* Follow-ups: chest CTs with ``0 < days <= 122`` (*"4 months" = 4 x 30.44
  days), ordered by date; the first two kept (*later ones are noted).
* A CT without a tumour segmentation on one of its series is dropped: at
  follow-up the tumour is no longer visible (seed 1); at baseline the next
  older CT in the window is used instead (*).
* Several CT series in one study: only series a segmentation was drawn on
  can give features; among them :func:`~icibenefit.pipeline.series_selection.choose_ct_series`
  applies the configured rules (axial, soft-tissue kernel, thinnest).
* *Chest: a series whose BodyPartExamined is set and names no chest region is
  dropped; an empty BodyPartExamined is accepted (often not filled in).
* Labs are not needed to place CTs; their presence per clinical timepoint is
  recorded (missing panels are imputed by the model, not here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, RTStructureSetStorage, SegmentationStorage

from icibenefit.domain import ClinicalRecord, LabTimepoint
from icibenefit.errors import DicomInputError, TimelineError
from icibenefit.pipeline.series_selection import (
    SeriesSelectionRules,
    SeriesSummary,
    choose_ct_series,
    summarize_series,
)

if TYPE_CHECKING:
    from icibenefit.settings import Settings

Label = Literal["baseline", "followup1", "followup2"]
FOLLOWUP_LABELS: tuple[Label, ...] = ("followup1", "followup2")


@dataclass(frozen=True)
class SeriesRecord:
    """One CT series as the study index knows it.

    ``instance_keys`` and ``segmentation_key`` are opaque to the timeline
    (file paths, SOP Instance UIDs...): they are handed back in the
    :class:`TimelineEntry` so the caller can load what was chosen.
    """

    study_uid: str
    series_uid: str
    study_date: dt.date | None
    summary: SeriesSummary
    segmentation_sop_uid: str | None = None
    segmentation_key: str | None = None
    instance_keys: tuple[str, ...] = ()

    @property
    def has_segmentation(self) -> bool:
        """Whether a SEG or RTSTRUCT was drawn on this series."""
        return self.segmentation_sop_uid is not None


@dataclass(frozen=True)
class TimelineRules:
    """The windows and choices of METHOD.md, configurable."""

    baseline_window_days: int = 60
    followup_window_days: int = 122
    max_followups: int = 2
    chest_body_parts: tuple[str, ...] = ("CHEST", "THORAX", "LUNG", "THX", "TORSO", "WHOLEBODY")
    series_rules: SeriesSelectionRules = field(default_factory=SeriesSelectionRules)

    def __post_init__(self) -> None:
        if self.baseline_window_days < 0 or self.followup_window_days <= 0:
            raise ValueError("timeline windows must be positive")
        if not 0 <= self.max_followups <= len(FOLLOWUP_LABELS):
            raise ValueError(f"max_followups must be 0..{len(FOLLOWUP_LABELS)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> TimelineRules:
        """The operator's rules (``timeline_*`` and ``series_*`` settings)."""
        return cls(
            baseline_window_days=settings.timeline_baseline_window_days,
            followup_window_days=settings.timeline_followup_window_days,
            max_followups=settings.timeline_max_followups,
            chest_body_parts=tuple(settings.timeline_chest_body_parts),
            series_rules=SeriesSelectionRules.from_settings(settings),
        )


@dataclass(frozen=True)
class TimelineEntry:
    """A CT timepoint the features are computed on."""

    label: Label
    study_uid: str
    series_uid: str
    study_date: dt.date
    days_from_treatment_start: int
    segmentation_sop_uid: str
    segmentation_key: str | None
    instance_keys: tuple[str, ...]


@dataclass(frozen=True)
class Timeline:
    """The chosen CT timepoints, in time order, and every decision taken."""

    treatment_start: dt.date
    entries: tuple[TimelineEntry, ...]
    decisions: tuple[str, ...]

    @property
    def baseline(self) -> TimelineEntry:
        """The baseline CT (always present: a timeline without one is an error)."""
        return self.entries[0]

    @property
    def followups(self) -> tuple[TimelineEntry, ...]:
        """The follow-up CTs kept (0 to 2)."""
        return self.entries[1:]


def build_timeline(
    records: Sequence[SeriesRecord],
    treatment_start: dt.date | ClinicalRecord,
    rules: TimelineRules | None = None,
) -> Timeline:
    """Arrange a patient's CT series into baseline and follow-ups.

    Parameters
    ----------
    records
        The patient's CT series (any studies, any dates).
    treatment_start
        T0, or the patient's :class:`~icibenefit.domain.ClinicalRecord`
        (then lab availability is recorded in the decisions too).
    rules
        Windows and series choice; METHOD.md's by default.

    Raises
    ------
    TimelineError
        When no CT with a segmented tumour lies in the baseline window; the
        message carries every decision so the report can say why.
    """
    rules = rules or TimelineRules()
    record = treatment_start if isinstance(treatment_start, ClinicalRecord) else None
    t0 = record.treatment_start if record else treatment_start
    assert isinstance(t0, dt.date)
    decisions: list[str] = [f"treatment start (T0) {t0.isoformat()}"]

    baseline_studies: list[tuple[dt.date, SeriesRecord]] = []
    followup_studies: list[tuple[dt.date, SeriesRecord]] = []
    for study_uid, members in _by_study(records).items():
        date = members[0].study_date
        if date is None:
            decisions.append(f"study {study_uid} dropped: no study date")
            continue
        days = (date - t0).days
        where = f"CT of {date.isoformat()} ({days:+d} days)"
        if days < -rules.baseline_window_days or days > rules.followup_window_days:
            decisions.append(
                f"{where} dropped: outside the windows (baseline {-rules.baseline_window_days} "
                f"to 0 days, follow-up 1 to {rules.followup_window_days} days)"
            )
            continue
        chest = [m for m in members if _is_chest(m.summary, rules)]
        if not chest:
            decisions.append(f"{where} dropped: not a chest CT ({members[0].summary.body_part})")
            continue
        segmented = [m for m in chest if m.has_segmentation]
        if not segmented:
            kind = "baseline" if days <= 0 else "follow-up"
            reason = (
                "tumour no longer visible (no segmentation)"
                if kind == "follow-up"
                else "no tumour segmentation"
            )
            decisions.append(f"{where} dropped as {kind}: {reason}")
            continue
        chosen = _choose_series(segmented, chest, rules, where, decisions)
        if chosen is None:
            continue
        (baseline_studies if days <= 0 else followup_studies).append((date, chosen))

    if not baseline_studies:
        decisions.append(
            f"no CT with a segmented tumour within {rules.baseline_window_days} days before T0"
        )
        raise TimelineError("no baseline CT: " + "; ".join(decisions))
    baseline_studies.sort(key=lambda item: (item[0], item[1].study_uid))
    followup_studies.sort(key=lambda item: (item[0], item[1].study_uid))
    for date, _ in baseline_studies[:-1]:
        decisions.append(f"CT of {date.isoformat()} not used: a later baseline CT exists")
    entries = [_entry("baseline", *baseline_studies[-1], t0)]
    kept = followup_studies[: rules.max_followups]
    entries += [
        _entry(label, *item, t0) for label, item in zip(FOLLOWUP_LABELS, kept, strict=False)
    ]
    for date, _ in followup_studies[rules.max_followups :]:
        decisions.append(
            f"CT of {date.isoformat()} not used: only {rules.max_followups} follow-ups are used"
        )
    decisions += [
        f"{e.label}: CT of {e.study_date.isoformat()} ({e.days_from_treatment_start:+d} days), "
        f"series {e.series_uid}, segmentation {e.segmentation_sop_uid}"
        for e in entries
    ]
    if len(entries) == 1:
        decisions.append("no follow-up CT with a visible tumour: baseline imaging only")
    if record is not None:
        decisions += _lab_decisions(record)
    return Timeline(treatment_start=t0, entries=tuple(entries), decisions=tuple(decisions))


def records_from_headers(headers: Iterable[tuple[str, Dataset]]) -> list[SeriesRecord]:
    """Study-index records from ``(key, header)`` pairs of CT, SEG and RTSTRUCT instances.

    A segmentation is attached to the CT series it references
    (ReferencedSeriesSequence for SEG, RTReferencedSeriesSequence for
    RTSTRUCT), or, when it names none, to the CT series of the same study and
    frame of reference.  When several segmentations reference one series the
    one with the smallest key is used, so the result does not depend on
    reading order.  Other objects (SR, localizer-only series...) are ignored
    or summarised as such.
    """
    ct: dict[str, list[tuple[str, Dataset]]] = {}
    segmentations: list[tuple[str, Dataset]] = []
    for key, ds in headers:
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class == CTImageStorage:
            ct.setdefault(str(ds.SeriesInstanceUID), []).append((key, ds))
        elif sop_class in (SegmentationStorage, RTStructureSetStorage):
            segmentations.append((key, ds))
    attached: dict[str, tuple[str, str]] = {}
    for key, ds in sorted(segmentations, key=lambda item: item[0]):
        for series_uid in _segmented_series(ds, ct):
            attached.setdefault(series_uid, (str(ds.SOPInstanceUID), key))
    records = []
    for series_uid, members in ct.items():
        members.sort(key=lambda item: item[0])
        first = members[0][1]
        seg = attached.get(series_uid)
        records.append(
            SeriesRecord(
                study_uid=str(first.StudyInstanceUID),
                series_uid=series_uid,
                study_date=_dicom_date(first),
                summary=summarize_series([ds for _, ds in members]),
                segmentation_sop_uid=seg[0] if seg else None,
                segmentation_key=seg[1] if seg else None,
                instance_keys=tuple(key for key, _ in members),
            )
        )
    return sorted(records, key=lambda r: (r.study_date or dt.date.min, r.study_uid, r.series_uid))


def _by_study(records: Sequence[SeriesRecord]) -> dict[str, list[SeriesRecord]]:
    studies: dict[str, list[SeriesRecord]] = {}
    for record in records:
        if record.summary.modality == "CT":
            studies.setdefault(record.study_uid, []).append(record)
    return studies


def _is_chest(summary: SeriesSummary, rules: TimelineRules) -> bool:
    body_part = summary.body_part.upper().replace(" ", "")
    return not body_part or any(part in body_part for part in rules.chest_body_parts)


def _choose_series(
    segmented: list[SeriesRecord],
    chest: list[SeriesRecord],
    rules: TimelineRules,
    where: str,
    decisions: list[str],
) -> SeriesRecord | None:
    for other in chest:
        if not other.has_segmentation:
            decisions.append(f"{where}: series {other.series_uid} not used: no tumour segmentation")
    try:
        choice = choose_ct_series([m.summary for m in segmented], rules.series_rules)
    except DicomInputError as exc:
        decisions.append(f"{where} dropped: {exc}")
        return None
    decisions += [f"{where}: {text}" for text in choice.decisions if len(segmented) > 1]
    return next(m for m in segmented if m.series_uid == choice.series_uid)


def _entry(label: Label, date: dt.date, series: SeriesRecord, t0: dt.date) -> TimelineEntry:
    assert series.segmentation_sop_uid is not None
    return TimelineEntry(
        label=label,
        study_uid=series.study_uid,
        series_uid=series.series_uid,
        study_date=date,
        days_from_treatment_start=(date - t0).days,
        segmentation_sop_uid=series.segmentation_sop_uid,
        segmentation_key=series.segmentation_key,
        instance_keys=series.instance_keys,
    )


def _lab_decisions(record: ClinicalRecord) -> list[str]:
    notes = []
    for timepoint in LabTimepoint:
        panel = record.panel(timepoint)
        if panel.values:
            notes.append(f"labs {timepoint.value}: {len(panel.values)} analytes")
        else:
            notes.append(f"labs {timepoint.value}: missing (imputed by the model)")
    return notes


def _segmented_series(ds: Dataset, ct: dict[str, list[tuple[str, Dataset]]]) -> list[str]:
    referenced = [str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])]
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                referenced.append(str(series.SeriesInstanceUID))
    known = [uid for uid in referenced if uid in ct]
    if known:
        return known
    frame_uid = str(ds.get("FrameOfReferenceUID", ""))
    if not frame_uid and "ReferencedFrameOfReferenceSequence" in ds:
        frame_uid = str(ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID)
    return [
        uid
        for uid, members in ct.items()
        if str(members[0][1].StudyInstanceUID) == str(ds.StudyInstanceUID)
        and str(members[0][1].get("FrameOfReferenceUID", "")) == frame_uid
    ]


def _dicom_date(ds: Dataset) -> dt.date | None:
    text = str(ds.get("StudyDate") or ds.get("SeriesDate") or "")
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None
