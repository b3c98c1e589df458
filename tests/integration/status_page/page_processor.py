"""The real job path with a stand-in model, for the status page and audit tests.

Loaded by ``icibenefit serve`` as ``job_processor = "page_processor:build"``
(this folder on PYTHONPATH).  Everything but the model is the product's code:
the clinical record comes from the settings' FHIR source (an NDJSON folder),
:class:`~icibenefit.reporting.runner.ReportingProcessor` builds and queues the
RiskAssessment, the outbox delivers it; the prediction is a fixed,
clinical-only one, so no trained bundle is needed.  While the file
``<data_dir>/FAIL`` exists every job fails, which is how the test makes a
dead job for the retry button.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from icibenefit.domain import ClinicalRecord, EndpointPrediction, Prediction
from icibenefit.listener.jobs import StudyProcessor
from icibenefit.persistence.jobs import JobContext
from icibenefit.reporting.processor import LazyClinicalSource
from icibenefit.reporting.runner import ReportingProcessor
from icibenefit.settings import Settings

PROBABILITY = 0.7
FAIL_MARKER = "FAIL"


def fixed_prediction(record: ClinicalRecord, dicom_files: Sequence[Path]) -> Prediction:
    """A clinical-only prediction with known probabilities (no model involved)."""
    return Prediction(
        patient_id=record.patient_id,
        bundle_name="status-page-test",
        bundle_version="t-1",
        demonstration=True,
        ensemble_kind="baseline",
        treatment_start=record.treatment_start,
        imaging=(),
        endpoints=(
            EndpointPrediction(endpoint="pfs6", probability=PROBABILITY, risk="low", model="stub"),
        ),
        created=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


class PageProcessor:
    """Fails while the marker file exists, else runs the reporting processor."""

    def __init__(self, settings: Settings) -> None:
        self.marker = settings.data_dir / FAIL_MARKER
        self.reporting = ReportingProcessor(
            settings, LazyClinicalSource(settings), fixed_prediction
        )

    def process(self, job: JobContext) -> None:
        if self.marker.exists():
            raise RuntimeError("failing on purpose (test marker present)")
        self.reporting.process(job)


def build(settings: Settings) -> StudyProcessor:
    """Factory named by ``job_processor``."""
    return PageProcessor(settings)
