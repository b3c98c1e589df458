"""The clinical rules of the pipeline as one value, built from the operator's settings.

Three choices decide what a prediction is computed on, and a hospital may
need other values than the method's (METHOD.md "Timepoints"): the timepoint
windows around treatment start and the series choice
(:class:`~icibenefit.pipeline.timeline.TimelineRules`, which holds the
:class:`~icibenefit.pipeline.series_selection.SeriesSelectionRules`), and the labels
naming the primary tumour among several segments
(:func:`~icibenefit.pipeline.segmentation.load_tumour_mask`).

A model learns from features computed under these rules, so training records
them in the bundle manifest (``extra.pipeline_rules``, keyed by setting name)
and inference reports every rule that differs from the recorded ones: the
model should then be retrained or validated under the new rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from icibenefit.pipeline.segmentation import DEFAULT_PRIMARY_LABELS
from icibenefit.pipeline.timeline import TimelineRules

if TYPE_CHECKING:
    from icibenefit.settings import Settings


@dataclass(frozen=True)
class PipelineRules:
    """Timeline, series choice and primary-tumour labels; the defaults are METHOD.md's."""

    timeline: TimelineRules = field(default_factory=TimelineRules)
    primary_labels: tuple[str, ...] = DEFAULT_PRIMARY_LABELS

    def __post_init__(self) -> None:
        if not any(label.strip() for label in self.primary_labels):
            raise ValueError("at least one primary-tumour label is needed")

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineRules:
        """The rules the operator configured (``Settings`` has validated them)."""
        return cls(
            timeline=TimelineRules.from_settings(settings),
            primary_labels=tuple(settings.primary_tumour_labels),
        )

    def as_settings(self) -> dict[str, Any]:
        """The rules as JSON values under their setting names (bundle manifest, cache keys)."""
        timeline, series = self.timeline, self.timeline.series_rules
        return {
            "timeline_baseline_window_days": timeline.baseline_window_days,
            "timeline_followup_window_days": timeline.followup_window_days,
            "timeline_max_followups": timeline.max_followups,
            "timeline_chest_body_parts": list(timeline.chest_body_parts),
            "series_require_axial": series.require_axial,
            "series_min_images": series.min_images,
            "series_soft_tissue_kernels": list(series.soft_tissue_kernels),
            "series_sharp_kernels": list(series.sharp_kernels),
            "series_priority": list(series.priority),
            "primary_tumour_labels": list(self.primary_labels),
        }

    def differences(self, recorded: Mapping[str, Any]) -> list[str]:
        """Each rule that differs from ``recorded`` (a bundle's :meth:`as_settings`), in words.

        ``recorded`` is JSON read from the bundle manifest (hence ``Any`` values).
        A rule the recording lacks (a bundle of an older version) is not
        reported: nothing is known about it.
        """
        return [
            f"{name} = {value!r} (the model was trained with {recorded[name]!r})"
            for name, value in self.as_settings().items()
            if name in recorded and recorded[name] != value
        ]
