"""The listener's processor seam: ``build_processor(settings)`` for the workers.

:func:`build_processor` is the factory :mod:`icibenefit.listener.jobs` finds by
name (``icibenefit.reporting.processor:build_processor``).  It wires the
clinical source of the settings (FHIR server or NDJSON) and a
:class:`BundlePredictor` into a :class:`~icibenefit.reporting.runner.ReportingProcessor`.

Both are resolved lazily, at the first job: a worker must start (and stay up)
even while no bundle is promoted yet or the EHR is unreachable; the job then
fails with a clear error and is retried.  The bundle is looked up again for
every job, so promoting or rolling back a model takes effect at the next job
without restarting the service.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from icibenefit.domain import ClinicalRecord, Prediction
from icibenefit.reporting.runner import ReportingProcessor
from icibenefit.settings import Settings

log = logging.getLogger(__name__)


class LazyClinicalSource:
    """The settings' clinical source, created at the first request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._source: Any = None

    def clinical_record(self, patient_id: str, issuer: str | None = None) -> ClinicalRecord:
        """Delegate to :func:`icibenefit.fhir.sources.clinical_source_from_settings`'s source."""
        if self._source is None:
            from icibenefit.fhir.sources import clinical_source_from_settings

            self._source = clinical_source_from_settings(self.settings)
        record: ClinicalRecord = self._source.clinical_record(patient_id, issuer)
        return record


class BundlePredictor:
    """The model bundle of the settings applied to one patient's files and record.

    Steps (the functions training runs for every cohort patient, so a served
    probability equals the one training computed for the same inputs):
    :func:`~icibenefit.pipeline.inference.plan_timepoints` chooses the CT
    timepoints, :func:`~icibenefit.pipeline.inference.timepoint_features`
    computes their features with the bundle's learned preprocessing, and
    :class:`~icibenefit.pipeline.inference.Predictor` serves the richest ensemble
    the data allows, with SHAP contributions of the clinical model when the
    bundle stores a background set.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded: tuple[Path, Any, Any, Any] | None = None

    def __call__(self, record: ClinicalRecord, dicom_files: Sequence[Path]) -> Prediction:
        """Predict for one patient from exactly these files."""
        from icibenefit.pipeline.inference import (
            PatientFeatures,
            plan_timepoints,
            timepoint_features,
        )

        bundle, predictor, imaging = self._load()
        planned, decisions = plan_timepoints(
            sorted(str(path) for path in dicom_files), record.treatment_start
        )
        kept: list[Any] = []
        for timepoint in planned if imaging is not None else ():
            if timepoint.label != "baseline" and not kept:
                break  # follow-ups only count after a usable baseline (METHOD.md)
            kept.append(timepoint_features(timepoint, imaging))
        if imaging is None:
            decisions.append("the model bundle has no imaging model: clinical data only")
        features = PatientFeatures(record, tuple(kept), tuple(decisions))
        manifest = bundle.manifest
        prediction: Prediction = predictor.predict(
            features,
            bundle_name=manifest.name,
            bundle_version=manifest.version,
            demonstration=manifest.intended_use.demonstration,
        )
        return prediction

    def _load(self) -> tuple[Any, Any, Any]:
        from icibenefit.model_store.bundle import load_bundle
        from icibenefit.model_store.store import configured_bundle_path

        path = configured_bundle_path(self.settings)
        if self._loaded is None or self._loaded[0] != path:
            bundle = load_bundle(path)
            self._loaded = (path, bundle, *_predictor_and_imaging(bundle))
            log.info("model bundle %s %s loaded", bundle.manifest.name, bundle.manifest.version)
        _, bundle, predictor, imaging = self._loaded
        return bundle, predictor, imaging


def _predictor_and_imaging(bundle: Any) -> tuple[Any, Any]:
    """The bundle's :class:`Predictor` and :class:`ImagingSettings` (``None`` without imaging)."""
    from icibenefit.pipeline.inference import (
        ImagingSettings,
        ModelCatalogue,
        Predictor,
        normalizer_from,
    )

    manifest = bundle.manifest
    catalogue = ModelCatalogue(
        endpoints=tuple(manifest.endpoints),
        feature_schema=manifest.feature_schema,
        served=manifest.extra.get("catalogue", {}).get("served", {}),
        delta_bounds=manifest.preprocessing.get("delta_bounds", {}),
    )
    predictor = Predictor(catalogue, bundle.estimator, _explainer(bundle))
    hu = manifest.preprocessing.get("hu")
    if not catalogue.served or not hu or hu.get("mean") is None:
        return predictor, None
    network = None
    if "tensors/cnn.safetensors" in manifest.files:
        from icibenefit.pipeline.deep import load_network

        network = load_network(bundle.tensors("cnn"))
    imaging = ImagingSettings(
        normalizer=normalizer_from(hu),
        radiomics_params=manifest.pyradiomics_params,
        radiomics_features=tuple(manifest.robust_features) or None,
        network=network,
    )
    return predictor, imaging


def _explainer(bundle: Any) -> Any:
    """SHAP top features of the clinical model, against the bundle's background rows."""
    names = set(bundle.names("json"))

    def explain(endpoint: str, estimator_name: str, row: Any) -> tuple[Any, ...]:
        import numpy as np

        from icibenefit.training.explain import shap_values, top_features

        member = f"shap-{estimator_name}"
        if member not in names:
            return ()
        reference = np.asarray(bundle.json(member)["background"], dtype=np.float64)
        values = shap_values(bundle.estimator(estimator_name), reference, row[None, :])[0]
        schema = bundle.manifest.feature_schema[estimator_name]
        return top_features(values, row, schema)

    return explain


def build_processor(settings: Settings) -> ReportingProcessor:
    """Factory named by the listener's processor seam."""
    return ReportingProcessor(settings, LazyClinicalSource(settings), BundlePredictor(settings))
