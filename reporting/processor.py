"""The listener's processor seam: ``build_processor(settings)`` for the workers.

:func:`build_processor` is the factory :mod:`icibenefit.listener.jobs` finds by
name (``icibenefit.reporting.processor:build_processor``).  It wires the
clinical source of the settings (FHIR server or NDJSON) and an
:class:`ActiveBundlePredictor` into a :class:`~icibenefit.reporting.runner.ReportingProcessor`.

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


class ActiveBundlePredictor:
    """The settings' model bundle, applied through the pipeline's own inference path.

    :func:`icibenefit.pipeline.inference.open_bundle` is what ``icibenefit
    predict`` uses too, so the service and the offline command give the same
    probabilities for the same files and record, under the clinical rules of
    the settings.  The configured bundle (the ``model_bundle`` setting, else the
    store's active one) is resolved for every job and reopened only when it changed.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._opened: tuple[Path, Any] | None = None

    def __call__(self, record: ClinicalRecord, dicom_files: Sequence[Path]) -> Prediction:
        """Predict for one patient from exactly these files."""
        prediction: Prediction = self._bundle().predict(
            sorted(str(path) for path in dicom_files), record
        )
        return prediction

    def _bundle(self) -> Any:
        from icibenefit.model_store.store import configured_bundle_path
        from icibenefit.pipeline.inference import open_bundle
        from icibenefit.pipeline.rules import PipelineRules

        path = configured_bundle_path(self.settings)
        if self._opened is None or self._opened[0] != path:
            opened = open_bundle(path, rules=PipelineRules.from_settings(self.settings))
            manifest = opened.bundle.manifest
            log.info("model bundle %s %s opened", manifest.name, manifest.version)
            self._opened = (path, opened)
        return self._opened[1]


def build_processor(settings: Settings) -> ReportingProcessor:
    """Factory named by the listener's processor seam."""
    return ReportingProcessor(
        settings, LazyClinicalSource(settings), ActiveBundlePredictor(settings)
    )
