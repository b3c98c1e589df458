"""A patient's features and fitted models -> a typed :class:`~icibenefit.domain.Prediction`.

Training and inference share this module so that they cannot drift apart:
training builds its design matrices with :func:`source_vector` and its
served probabilities with :class:`Predictor`,
exactly as inference does for a new patient, so a patient scored by
``icibenefit predict`` gets the probability training computed for them (to
floating-point identity).  Nothing here reads DICOM or a bundle: the models
come in as an estimator getter and the features as :class:`PatientFeatures`,
so the serving rule and the ensembles are testable with plain objects.
:mod:`icibenefit.pipeline.inference` computes the features from DICOM and
wraps a loaded bundle around this predictor.

Kinds of model input (seed 1, "Model design"; METHOD.md "Models")
------------------------------------------------------------------
baseline
    Features of the baseline CT (``baseline.<feature>``).
delta
    Relative net change between the baseline and the first follow-up CT,
    ``(f1 - f0) / (|f0| + eps)`` with ``0/0 -> 0``, clipped per feature to the
    [1st, 99th] percentile of the training deltas (bounds stored in the
    bundle): a near-zero baseline value would otherwise produce deltas of
    1e6 that dominate the scaler.
longitudinal
    Baseline, first and second follow-up features concatenated
    (``baseline.``/``followup1.``/``followup2.`` prefixes).  Follow-ups are
    numbered by date among the CTs the timeline kept (a follow-up whose tumour
    vanished is dropped before numbering); a missing slot takes the features
    of the closest available slot, ties going to the earlier one, so no later
    information leaks backwards.

Serving rule (METHOD.md): the richest ensemble the data allows - the
longitudinal ensemble when the patient has a follow-up CT, else the baseline
ensemble; without any usable CT, the clinical baseline model alone.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from icibenefit.domain import (
    ClinicalRecord,
    EndpointPrediction,
    FeatureContribution,
    ImagingTimepoint,
    LabTimepoint,
    Prediction,
)
from icibenefit.pipeline.clinical_features import (
    as_row,
    clinical_vector,
    imputation_decisions,
    lab_observation_ids,
)
from icibenefit.pipeline.delta import SLOTS, delta_features, longitudinal_vector

Kind = Literal["baseline", "delta", "longitudinal"]
RISK_THRESHOLD = 0.5
SOURCE_TITLES = {
    "clinical": "clinical",
    "radiomics": "radiomics",
    "dfimm": "DF-imm",
    "unet": "UNET deep radiomics",
}


@dataclass(frozen=True)
class TimepointFeatures:
    """The imaging features of one CT timepoint the timeline kept.

    ``deep`` and ``cnn_probability`` are ``None`` when the bundle has no CNN,
    ``unet`` (seed 2's deep radiomics) when it has no UNET.
    """

    timepoint: ImagingTimepoint
    radiomics: Mapping[str, float]
    deep: Mapping[str, float] | None = None
    cnn_probability: float | None = None
    unet: Mapping[str, float] | None = None

    def source(self, name: str) -> Mapping[str, float] | None:
        """The feature dict of imaging source ``name`` (``radiomics``, ``dfimm`` or ``unet``)."""
        if name == "unet":
            return self.unet
        return self.radiomics if name == "radiomics" else self.deep


@dataclass(frozen=True)
class PatientFeatures:
    """Everything the models need about one patient, with its provenance."""

    record: ClinicalRecord
    imaging: tuple[TimepointFeatures, ...]
    decisions: tuple[str, ...] = ()

    @property
    def ordered_imaging(self) -> tuple[TimepointFeatures, ...]:
        """Baseline first, then follow-ups by date."""
        return tuple(
            sorted(
                self.imaging,
                key=lambda t: (t.timepoint.label != "baseline", t.timepoint.study_date),
            )
        )

    @property
    def has_baseline_imaging(self) -> bool:
        """Whether a baseline CT with a tumour mask fed the features."""
        return any(t.timepoint.label == "baseline" for t in self.imaging)

    @property
    def has_imaging_followup(self) -> bool:
        """Whether at least one follow-up CT (with a visible tumour) was kept."""
        return self.has_baseline_imaging and len(self.imaging) > 1


def _imaging_vector(
    imaging: Sequence[TimepointFeatures], source: str, kind: str
) -> dict[str, float] | None:
    if not imaging or imaging[0].timepoint.label != "baseline":
        return None
    per_slot = [t.source(source) for t in imaging[: len(SLOTS)]]
    if any(features is None for features in per_slot):
        return None
    slots: list[Mapping[str, float]] = [f for f in per_slot if f is not None]
    if kind == "baseline":
        return {f"baseline.{k}": float(v) for k, v in slots[0].items()}
    if len(slots) < 2:
        return None
    if kind == "delta":
        return {f"delta.{k}": v for k, v in delta_features(slots[0], slots[1]).items()}
    vector, _ = longitudinal_vector(dict(zip(SLOTS, slots, strict=False)))
    return vector


def clip_delta(
    vector: dict[str, float], bounds: Mapping[str, Sequence[float]] | None
) -> dict[str, float]:
    """Clip delta features to the training bounds (values outside the schema are kept)."""
    if not bounds:
        return vector
    clipped = dict(vector)
    for name, (low, high) in bounds.items():
        value = clipped.get(name)
        if value is not None and not math.isnan(value):
            clipped[name] = min(max(value, low), high)
    return clipped


def source_vector(
    features: PatientFeatures,
    source: str,
    kind: Kind,
    *,
    delta_bounds: Mapping[str, Sequence[float]] | None = None,
    require_followup: bool = True,
) -> dict[str, float] | None:
    """The input vector of the ``source``/``kind`` model, or ``None`` when the data cannot feed it.

    ``require_followup=False`` lets the clinical longitudinal vector impute
    missing follow-up panels from the baseline panel (used at inference when
    the imaging has follow-ups but the labs do not; training excludes such
    patients from the clinical longitudinal model, as seed 1 did).
    """
    if source == "clinical":
        vector = clinical_vector(features.record, kind, require_followup=require_followup)
    else:
        vector = _imaging_vector(features.ordered_imaging, source, kind)
    if vector is not None and kind == "delta":
        vector = clip_delta(vector, delta_bounds)
    return vector


def model_title(source: str, kind: str) -> str:
    """Human-readable model name for reports, e.g. ``longitudinal RF (DF-imm)``."""
    return f"{kind} RF ({SOURCE_TITLES.get(source, source)})"


def ensemble_title(kind: str, sources: Sequence[str]) -> str:
    """Human-readable ensemble name, e.g. ``longitudinal ensemble (clinical + DF-imm)``."""
    return f"{kind} ensemble ({' + '.join(SOURCE_TITLES.get(s, s) for s in sources)})"


@dataclass(frozen=True)
class ModelCatalogue:
    """What a bundle serves: per endpoint, the single-source models and the served ensembles.

    Attributes
    ----------
    feature_schema
        Estimator name (``<endpoint>-<source>-<kind>``) -> ordered input features.
    served
        Kind -> the sources of the ensemble served for that kind, in order
        (e.g. ``{"longitudinal": ["clinical", "dfimm"]}``).
    delta_bounds
        Source -> delta feature -> ``[low, high]``.
    """

    endpoints: tuple[str, ...]
    feature_schema: Mapping[str, Sequence[str]]
    served: Mapping[str, Sequence[str]]
    delta_bounds: Mapping[str, Mapping[str, Sequence[float]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form stored in the bundle manifest (``extra.catalogue``)."""
        return {
            "endpoints": list(self.endpoints),
            "served": {k: list(v) for k, v in self.served.items()},
        }

    @staticmethod
    def estimator_name(endpoint: str, source: str, kind: str) -> str:
        """Bundle member name of a single-source model."""
        return f"{endpoint}-{source}-{kind}"


class Classifier(Protocol):
    """What serving needs of a fitted model: scikit-learn's probabilistic classifier API.

    The bundle's models are fitted scikit-learn pipelines (imputer, scaler,
    selector, classifier) deserialised by skops; training passes the same
    objects in memory.  Only ``classes_`` and ``predict_proba`` are used, so
    tests may pass any object that has them.
    """

    @property
    def classes_(self) -> NDArray[Any]:
        """The class labels, in the column order of :meth:`predict_proba`."""
        ...

    def predict_proba(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Class probabilities, one row per row of ``X``."""
        ...


EstimatorGetter = Callable[[str], Classifier]
ShapExplainer = Callable[[str, str, NDArray[np.float64]], tuple[FeatureContribution, ...]]


class Predictor:
    """Applies a catalogue of fitted models to :class:`PatientFeatures`.

    Parameters
    ----------
    catalogue
        Which models exist and which ensembles are served.
    estimator
        Name -> fitted pipeline (the bundle's loader, or training's in-memory dict).
    explain
        Optional ``(endpoint, clinical estimator name, row) -> top features``.
    """

    def __init__(
        self,
        catalogue: ModelCatalogue,
        estimator: EstimatorGetter,
        explain: ShapExplainer | None = None,
    ) -> None:
        if not catalogue.endpoints:
            raise ValueError("a catalogue needs at least one endpoint")
        self.catalogue = catalogue
        self.estimator = estimator
        self.explain = explain

    def choose(self, features: PatientFeatures) -> tuple[Kind, tuple[str, ...], list[str]]:
        """The kind and sources to serve for this patient, and why."""
        served = self.catalogue.served
        if features.has_imaging_followup and "longitudinal" in served:
            return (
                "longitudinal",
                tuple(served["longitudinal"]),
                ["longitudinal ensemble: baseline and follow-up CT available"],
            )
        if features.has_baseline_imaging and "baseline" in served:
            reason = (
                "no follow-up CT" if not features.has_imaging_followup else "no longitudinal model"
            )
            return "baseline", tuple(served["baseline"]), [f"baseline ensemble: {reason}"]
        return "baseline", ("clinical",), ["clinical baseline model only: no usable baseline CT"]

    def probability(
        self, endpoint: str, source: str, kind: str, vector: Mapping[str, float]
    ) -> float:
        """P(benefit) of one single-source model for one patient."""
        name = ModelCatalogue.estimator_name(endpoint, source, kind)
        row = as_row(vector, self.catalogue.feature_schema[name])[None, :]
        pipeline = self.estimator(name)
        classes = list(pipeline.classes_)
        return float(pipeline.predict_proba(row)[0, classes.index(1)])

    def predict(
        self,
        features: PatientFeatures,
        *,
        bundle_name: str,
        bundle_version: str,
        demonstration: bool,
        created: dt.datetime | None = None,
    ) -> Prediction:
        """Score every endpoint with the richest ensemble the patient's data allows."""
        kind, sources, decisions = self.choose(features)
        decisions = list(features.decisions) + decisions
        vectors: dict[str, dict[str, float]] = {}
        for source in sources:
            vector = source_vector(
                features,
                source,
                kind,
                delta_bounds=self.catalogue.delta_bounds.get(source),
                require_followup=False,
            )
            if vector is None:
                raise ValueError(f"no {source} {kind} vector although {kind} was chosen")
            vectors[source] = vector
        if "clinical" in sources and kind == "longitudinal":
            decisions += imputation_decisions(features.record)
        title = ensemble_title(kind, sources) if len(sources) > 1 else model_title(sources[0], kind)
        endpoints = []
        for endpoint in self.catalogue.endpoints:
            probabilities = [self.probability(endpoint, s, kind, vectors[s]) for s in sources]
            probability = float(np.mean(probabilities))
            top: tuple[FeatureContribution, ...] = ()
            if self.explain is not None and "clinical" in vectors:
                name = ModelCatalogue.estimator_name(endpoint, "clinical", kind)
                row = as_row(vectors["clinical"], self.catalogue.feature_schema[name])
                top = self.explain(endpoint, name, row)
            endpoints.append(
                EndpointPrediction(
                    endpoint=endpoint,
                    probability=probability,
                    risk="high" if probability < RISK_THRESHOLD else "low",
                    model=title,
                    threshold=RISK_THRESHOLD,
                    top_features=top,
                )
            )
        ordered = tuple(t.timepoint for t in features.ordered_imaging)
        imaging = () if len(sources) == 1 else ordered[:1] if kind == "baseline" else ordered[:3]
        labs = (
            features.record.panel(LabTimepoint.BASELINE).source_observation_ids
            if kind == "baseline"
            else lab_observation_ids(features.record)
        )
        return Prediction(
            patient_id=features.record.patient_id,
            bundle_name=bundle_name,
            bundle_version=bundle_version,
            demonstration=demonstration,
            ensemble_kind=kind,
            treatment_start=features.record.treatment_start,
            imaging=imaging,
            lab_observation_ids=tuple(labs),
            endpoints=tuple(endpoints),
            decisions=tuple(decisions),
            created=created or dt.datetime.now(dt.UTC),
        )
