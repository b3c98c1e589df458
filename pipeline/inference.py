"""A model bundle and a patient's DICOM files -> a typed :class:`~icibenefit.domain.Prediction`.

This is the DICOM and bundle side of scoring, kept apart from the fitted-model
side (:mod:`icibenefit.pipeline.predictor`) because it is the part that needs
files: it plans the patient's CT timepoints under the clinical rules
(:func:`plan_timepoints`), loads each CT and tumour mask and computes its
radiomics, DF-imm and UNET features with the bundle's learned preprocessing
(:func:`timepoint_features`), and opens, verifies and wraps a bundle
(:func:`open_bundle`).  Training runs the same :func:`plan_timepoints`,
:func:`timepoint_features` and :func:`kept_timepoints` for every cohort
patient, so training and inference compute features along one path.  This
module never imports training: the networks, their feature extraction and the
explanations it serves are inference's own (:mod:`icibenefit.pipeline.deep`,
:mod:`icibenefit.pipeline.unet`, :mod:`icibenefit.pipeline.explain`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import numpy as np
import pydicom
from numpy.typing import NDArray

from icibenefit.domain import ClinicalRecord, FeatureContribution, ImagingTimepoint, Prediction
from icibenefit.errors import IciBenefitError, ModelBundleError, TimelineError
from icibenefit.model_store.bundle import ModelBundle, load_bundle
from icibenefit.model_store.manifest import BundleManifest
from icibenefit.pipeline.explain import shap_values, top_features
from icibenefit.pipeline.images import load_ct_volume
from icibenefit.pipeline.normalization import IntensityNormalizer
from icibenefit.pipeline.patches import tumour_patch
from icibenefit.pipeline.predictor import (
    ModelCatalogue,
    PatientFeatures,
    Predictor,
    ShapExplainer,
    TimepointFeatures,
)
from icibenefit.pipeline.radiomics_features import extract_radiomics
from icibenefit.pipeline.rules import PipelineRules
from icibenefit.pipeline.segmentation import load_tumour_mask
from icibenefit.pipeline.timeline import (
    TimelineEntry,
    TimelineRules,
    build_timeline,
    records_from_headers,
)

if TYPE_CHECKING:
    # torch-backed modules: named for the type checker only, so importing this
    # module (the service does at start-up) does not load torch.
    from icibenefit.pipeline.deep import NoduleXNet
    from icibenefit.pipeline.unet import UNet25D

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# DICOM -> timepoints -> features (the part training runs for every cohort patient)


class TimepointIdentity(TypedDict):
    """What names a CT timepoint, whatever stage it is at (timeline entry, plan, result)."""

    label: Literal["baseline", "followup1", "followup2"]
    study_uid: str
    series_uid: str
    study_date: dt.date
    days_from_treatment_start: int


def timepoint_identity(timepoint: TimelineEntry | PlannedTimepoint) -> TimepointIdentity:
    """The fields a timepoint keeps from one stage to the next, copied in one place."""
    return TimepointIdentity(
        label=timepoint.label,
        study_uid=timepoint.study_uid,
        series_uid=timepoint.series_uid,
        study_date=timepoint.study_date,
        days_from_treatment_start=timepoint.days_from_treatment_start,
    )


@dataclass(frozen=True)
class PlannedTimepoint:
    """A CT timepoint chosen by the timeline, with the files to read."""

    label: Literal["baseline", "followup1", "followup2"]
    study_uid: str
    series_uid: str
    study_date: dt.date
    days_from_treatment_start: int
    ct_files: tuple[str, ...]
    segmentation_file: str

    @classmethod
    def from_entry(cls, entry: TimelineEntry) -> PlannedTimepoint:
        """The plan of a timeline entry: its identity and the files to read."""
        return cls(
            **timepoint_identity(entry),
            ct_files=entry.instance_keys,
            segmentation_file=str(entry.segmentation_key),
        )

    def imaging_timepoint(
        self,
        image_sop_uids: tuple[str, ...] = (),
        segmentation_sop_uid: str | None = None,
        segmentation_sop_class_uid: str | None = None,
        segment_number: int | None = None,
    ) -> ImagingTimepoint:
        """The timepoint as a prediction reports it, with the instances read (if any yet)."""
        return ImagingTimepoint(
            **timepoint_identity(self),
            image_sop_uids=image_sop_uids,
            segmentation_sop_uid=segmentation_sop_uid,
            segmentation_sop_class_uid=segmentation_sop_class_uid,
            segment_number=segment_number,
        )


def plan_timepoints(
    files: Sequence[str], record: ClinicalRecord | dt.date, rules: TimelineRules | None = None
) -> tuple[list[PlannedTimepoint], list[str]]:
    """Baseline and up to two follow-up CTs from a patient's DICOM files, and why.

    Headers are read without pixels and handed to
    :func:`icibenefit.pipeline.timeline.build_timeline` (the ``rules``' windows
    and series choice, METHOD.md's by default; vanished tumours).  A patient
    without a usable baseline CT gets no imaging timepoints (the clinical model
    alone then serves) and the timeline's reasons as decisions.
    """
    headers = [(path, pydicom.dcmread(path, stop_before_pixels=True)) for path in sorted(files)]
    try:
        timeline = build_timeline(records_from_headers(headers), record, rules)
    except TimelineError as exc:
        return [], [str(exc)]
    planned = [PlannedTimepoint.from_entry(entry) for entry in timeline.entries]
    return planned, list(timeline.decisions)


@dataclass(frozen=True)
class ImagingSettings:
    """What imaging features depend on: the bundle's (or training's) learned preprocessing.

    ``normalizer`` is None for a bundle without an imaging model (clinical data
    only); ``network`` (DF-imm and the CNN-baseline probability) and ``unet``
    (deep radiomics) are None when the bundle has no such network.
    ``radiomics_params`` is pyradiomics' parameter document (JSON/YAML data, hence
    ``Any`` values).  ``rules`` are the operator's clinical rules (timepoints,
    series, primary tumour).
    """

    normalizer: IntensityNormalizer | None
    radiomics_params: Mapping[str, Any]
    radiomics_features: tuple[str, ...] | None
    network: NoduleXNet | None = None
    unet: UNet25D | None = None
    rules: PipelineRules = field(default_factory=PipelineRules)


def timepoint_features(planned: PlannedTimepoint, settings: ImagingSettings) -> TimepointFeatures:
    """Load one timepoint's CT and mask and compute its radiomics and deep features."""
    normalizer = settings.normalizer
    if normalizer is None:  # callers check first: a bundle without one serves clinical data only
        raise ValueError("imaging features need the learned intensity normalizer")
    ct = load_ct_volume(planned.ct_files)
    mask = load_tumour_mask(
        planned.segmentation_file, ct, primary_labels=settings.rules.primary_labels
    )
    radiomics = extract_radiomics(
        ct.image,
        mask.mask,
        normalizer,
        params=settings.radiomics_params,
        feature_names=settings.radiomics_features,
    )
    deep: dict[str, float] | None = None
    probability: float | None = None
    if settings.network is not None:
        # torch-backed modules: imported on first use, not at service start-up.
        from icibenefit.pipeline.deep import cnn_probability, extract_deep_features
        from icibenefit.pipeline.torch_threads import torch_threads

        patch = tumour_patch(ct.image, mask.mask, normalizer).image[None]
        # One thread and one patch per call: convolution sums then run in one
        # fixed order, so training workers and inference get identical values.
        with torch_threads(1):
            values = extract_deep_features(settings.network, patch, batch_size=1)[0]
            probability = float(cnn_probability(settings.network, patch, batch_size=1)[0])
        deep = {f"df{i:03d}": float(v) for i, v in enumerate(values)}
    unet: dict[str, float] | None = None
    if settings.unet is not None:
        from icibenefit.pipeline.unet import unet_features  # torch: imported on first use

        unet = unet_features(settings.unet, ct.image, mask.mask, normalizer)
    timepoint = planned.imaging_timepoint(
        image_sop_uids=ct.sop_instance_uids,
        segmentation_sop_uid=mask.sop_instance_uid,
        segmentation_sop_class_uid=mask.sop_class_uid,
        segment_number=mask.segment_number,
    )
    return TimepointFeatures(timepoint, radiomics, deep, probability, unet)


def timepoint_outcome(
    planned: PlannedTimepoint, settings: ImagingSettings
) -> TimepointFeatures | str:
    """:func:`timepoint_features`, or why the timepoint is dropped when its files fail."""
    try:
        return timepoint_features(planned, settings)
    except IciBenefitError as exc:
        return f"{planned.label} dropped: {exc}"


def kept_timepoints(
    outcomes: Iterable[TimepointFeatures | str],
) -> tuple[tuple[TimepointFeatures, ...], list[str]]:
    """The timepoints a patient's features keep, and why the others were dropped.

    ``outcomes`` are :func:`timepoint_outcome`'s, baseline first.  A follow-up
    is kept only if a baseline was kept: delta features compare a follow-up
    with the baseline, so one without it has nothing to compare to.
    """
    kept: list[TimepointFeatures] = []
    dropped: list[str] = []
    for outcome in outcomes:
        if isinstance(outcome, str):
            dropped.append(outcome)
        elif outcome.timepoint.label == "baseline" or kept:
            kept.append(outcome)
    return tuple(kept), dropped


# --------------------------------------------------------------------------
# A loaded bundle as a predictor

#: skops types of our own that bundles written by ``icibenefit train`` contain.
EXTRA_TRUSTED_TYPES = ("icibenefit.pipeline.clinical_features.KMeansImputer",)
TOP_FEATURES = 5


@dataclass(frozen=True)
class BundlePredictor:
    """A verified model bundle ready to score patients (build with :func:`open_bundle`).

    ``rule_differences`` names each clinical rule served differently from the
    bundle's training (see :meth:`~icibenefit.pipeline.rules.PipelineRules.differences`).
    """

    bundle: ModelBundle
    predictor: Predictor
    imaging: ImagingSettings
    rule_differences: tuple[str, ...] = ()

    @property
    def demonstration(self) -> bool:
        """Whether the bundle is a demonstration model (synthetic training data)."""
        return bool(self.bundle.manifest.intended_use.demonstration)

    def features(self, files: Sequence[str], record: ClinicalRecord) -> PatientFeatures:
        """Timeline, images, masks and features of one patient (the training code's path)."""
        if self.imaging.normalizer is None:
            return PatientFeatures(
                record, (), ("the model bundle has no imaging model: clinical data only",)
            )
        planned, decisions = plan_timepoints(files, record, self.imaging.rules.timeline)
        if self.rule_differences:
            decisions.insert(
                0,
                "clinical rules differ from the model's training (retrain or validate the "
                "model under them): " + "; ".join(self.rule_differences),
            )
        kept, dropped = kept_timepoints(timepoint_outcome(t, self.imaging) for t in planned)
        return PatientFeatures(record, kept, (*decisions, *dropped))

    def predict(
        self, files: Sequence[str], record: ClinicalRecord, created: dt.datetime | None = None
    ) -> Prediction:
        """The :class:`Prediction` for one patient's DICOM files and clinical record."""
        manifest = self.bundle.manifest
        return self.predictor.predict(
            self.features(files, record),
            bundle_name=manifest.name,
            bundle_version=manifest.version,
            demonstration=self.demonstration,
            created=created,
        )


def catalogue_from_manifest(manifest: BundleManifest) -> ModelCatalogue:
    """The serving catalogue a bundle's manifest describes."""
    described = manifest.extra.get("catalogue")
    if not described:
        raise ModelBundleError("bundle manifest has no serving catalogue (extra.catalogue)")
    return ModelCatalogue(
        endpoints=tuple(described["endpoints"]),
        feature_schema=manifest.feature_schema,
        served=described["served"],
        delta_bounds=manifest.preprocessing.get("delta_bounds", {}),
    )


def bundle_unet(bundle: ModelBundle) -> UNet25D | None:
    """The bundle's UNET (seed 2's deep radiomics, ``tensors/unet``) in eval mode, or None."""
    if "unet" not in bundle.names("tensors"):
        return None
    from icibenefit.pipeline.unet import load_unet  # torch: imported on first use

    return load_unet(bundle.tensors("unet"))


def open_bundle(
    path: Path | str, *, explain: bool = True, rules: PipelineRules | None = None
) -> BundlePredictor:
    """Load and verify a bundle and wrap it for inference.

    Parameters
    ----------
    path
        The bundle directory.
    explain
        Compute SHAP top features of the clinical model (seconds per patient).
    rules
        The clinical rules to apply (callers pass
        :meth:`PipelineRules.from_settings`); METHOD.md's when ``None``.
    """
    bundle = load_bundle(path, extra_trusted=EXTRA_TRUSTED_TYPES)
    manifest = bundle.manifest
    catalogue = catalogue_from_manifest(manifest)
    network = None
    if "cnn" in bundle.names("tensors"):
        from icibenefit.pipeline.deep import load_network  # torch: imported on first use

        network = load_network(bundle.tensors("cnn"))
    hu = manifest.preprocessing.get("hu")
    imaging = ImagingSettings(
        normalizer=None if hu is None else IntensityNormalizer.from_statistics(hu),
        radiomics_params=manifest.pyradiomics_params,
        radiomics_features=tuple(manifest.robust_features) or None,
        network=network,
        unet=bundle_unet(bundle),
        rules=rules or PipelineRules(),
    )
    differences = imaging.rules.differences(manifest.extra.get("pipeline_rules") or {})
    if differences and imaging.normalizer is not None:
        log.warning(
            "bundle %s %s was trained under other clinical rules: %s",
            manifest.name,
            manifest.version,
            "; ".join(differences),
        )
    explainer = _bundle_explainer(bundle) if explain else None
    return BundlePredictor(
        bundle,
        Predictor(catalogue, bundle.estimator, explainer),
        imaging,
        tuple(differences) if imaging.normalizer is not None else (),
    )


def _bundle_explainer(bundle: ModelBundle) -> ShapExplainer:
    def explain(
        endpoint: str, name: str, row: NDArray[np.float64]
    ) -> tuple[FeatureContribution, ...]:
        member = f"shap-{name}"
        if member not in bundle.names("json"):
            return ()
        reference = np.asarray(bundle.json(member)["background"], dtype=np.float64)
        seed = int(bundle.manifest.extra.get("seed", 0))
        values = shap_values(bundle.estimator(name), reference, row[None, :], seed=seed)[0]
        names = bundle.manifest.feature_schema[name]
        return top_features(values, row, names, TOP_FEATURES)

    return explain
