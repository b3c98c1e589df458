"""The listener's default processor: ``build_processor(settings)`` for the workers.

:func:`build_processor` is the factory the listener's workers use unless the
``job_processor`` setting names another (:mod:`icibenefit.listener.jobs`).  It
wires the clinical source of the settings (FHIR server or NDJSON) and an
:class:`ActiveBundlePredictor` into a :class:`~icibenefit.reporting.runner.ReportingProcessor`.

Both are resolved lazily, at the first job: a worker must start (and stay up)
even while no bundle is promoted yet or the EHR is unreachable; the job then
fails with a clear error and is retried.  The bundle is looked up again for
every job, so promoting or rolling back a model takes effect at the next job
without restarting the service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from icibenefit.domain import ClinicalRecord, Prediction
from icibenefit.fhir.sources import ClinicalSource, clinical_source_from_settings
from icibenefit.model_store.store import configured_bundle_path
from icibenefit.pipeline.rules import PipelineRules
from icibenefit.reporting.runner import (
    PatientPredictor,
    RecordSource,
    ReportingProcessor,
)
from icibenefit.settings import Settings

if TYPE_CHECKING:  # the module imports torch: only its type is needed here
    from icibenefit.pipeline.inference import BundlePredictor

log = logging.getLogger(__name__)

__all__ = [
    "ActiveBundlePredictor",
    "BundleOpener",
    "LazyClinicalSource",
    "PatientPredictor",
    "RecordSource",
    "ReportingProcessor",
    "build_processor",
]


class BundleOpener(Protocol):
    """Opens a model bundle for inference (:func:`icibenefit.pipeline.inference.open_bundle`)."""

    def __call__(self, path: Path, *, rules: PipelineRules) -> BundlePredictor:
        """The verified bundle at ``path``, applying ``rules``."""
        ...


def _open_bundle(path: Path, *, rules: PipelineRules) -> BundlePredictor:
    """The pipeline's :func:`~icibenefit.pipeline.inference.open_bundle`, imported at first use."""
    # Function-local: the inference module imports torch (seconds), which a
    # worker pays only when its first job needs a model.
    from icibenefit.pipeline.inference import open_bundle

    return open_bundle(path, rules=rules)


class LazyClinicalSource:
    """The settings' clinical source, created at the first request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._source: ClinicalSource | None = None

    def clinical_record(self, patient_id: str, issuer: str | None = None) -> ClinicalRecord:
        """Delegate to :func:`icibenefit.fhir.sources.clinical_source_from_settings`'s source."""
        if self._source is None:
            self._source = clinical_source_from_settings(self.settings)
        return self._source.clinical_record(patient_id, issuer)


class ActiveBundlePredictor:
    """The settings' model bundle, applied through the pipeline's own inference path.

    :func:`icibenefit.pipeline.inference.open_bundle` is what ``icibenefit
    predict`` uses too, so the service and the offline command give the same
    probabilities for the same files and record, under the clinical rules of
    the settings.  The configured bundle (the ``model_bundle`` setting, else the
    store's active one) is resolved for every job and reopened only when it changed.

    Parameters
    ----------
    settings
        The service settings (model store, bundle, clinical rules).
    opener
        Opens a bundle (default: the pipeline's ``open_bundle``).
    locate
        The bundle to use now (default:
        :func:`~icibenefit.model_store.store.configured_bundle_path`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        opener: BundleOpener = _open_bundle,
        locate: Callable[[Settings], Path] = configured_bundle_path,
    ) -> None:
        self.settings = settings
        self._opener = opener
        self._locate = locate
        self._opened: tuple[Path, BundlePredictor] | None = None

    def __call__(self, record: ClinicalRecord, dicom_files: Sequence[Path]) -> Prediction:
        """Predict for one patient from exactly these files."""
        return self._bundle().predict(sorted(str(path) for path in dicom_files), record)

    def _bundle(self) -> BundlePredictor:
        path = self._locate(self.settings)
        if self._opened is None or self._opened[0] != path:
            opened = self._opener(path, rules=PipelineRules.from_settings(self.settings))
            manifest = opened.bundle.manifest
            log.info("model bundle %s %s opened", manifest.name, manifest.version)
            self._opened = (path, opened)
        return self._opened[1]


def build_processor(settings: Settings) -> ReportingProcessor:
    """The listener's default processor factory."""
    return ReportingProcessor(
        settings, LazyClinicalSource(settings), ActiveBundlePredictor(settings)
    )
