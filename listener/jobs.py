"""The seam where processing plugs in: what the workers call for each job.

Workers (:func:`icibenefit.listener.service.worker_main`) claim jobs from the
queue (:class:`icibenefit.persistence.jobs.JobQueue`, which also documents
the life of a study) and call ``processor.process(context)`` with a
:class:`~icibenefit.persistence.jobs.JobContext`.  A processor is any object
with that method (:class:`StudyProcessor`); it is built once per worker
process by a *factory* ``f(settings) -> StudyProcessor``:

1. ``settings.job_processor`` when set (TOML/env ``ICIBENEFIT_JOB_PROCESSOR``),
   a ``"module:function"`` name imported at start-up (tests plug in their own);
2. else :func:`icibenefit.reporting.processor.build_processor`, imported
   directly: the real pipeline + reporting processor.

:func:`build_recording_processor` (``job_processor =
"icibenefit.listener.jobs:build_recording_processor"``) only records the study
as processed (table ``processed``).

A processor raises any exception to fail the attempt (retried with backoff);
it must be idempotent per (study, version), e.g. by giving outgoing items
deterministic dedup keys: :meth:`icibenefit.persistence.outbox.Outbox.enqueue_dicom`
and ``enqueue_fhir`` ignore a key they already hold.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import closing
from typing import Protocol, cast

from icibenefit.errors import ConfigurationError
from icibenefit.persistence import index
from icibenefit.persistence.jobs import JobContext, record_processed
from icibenefit.reporting.processor import build_processor
from icibenefit.settings import Settings

REPORTING_FACTORY = f"{build_processor.__module__}:{build_processor.__name__}"
RECORDING_FACTORY = "icibenefit.listener.jobs:build_recording_processor"


class StudyProcessor(Protocol):
    """The seam: process one stable study; raise to fail the attempt."""

    def process(self, job: JobContext) -> None:
        """Do the work for ``job.study_uid``; must be idempotent per (study, version)."""


ProcessorFactory = Callable[[Settings], StudyProcessor]


class RecordingProcessor:
    """The placeholder processor: records that the study was processed, nothing else."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def process(self, job: JobContext) -> None:
        """Insert one ``processed`` row per job (idempotent on the job id)."""
        with closing(index.connect(self.settings.data_dir)) as conn:
            record_processed(conn, job)


def build_recording_processor(settings: Settings) -> StudyProcessor:
    """Factory of :class:`RecordingProcessor` (a processor that needs no model)."""
    return RecordingProcessor(settings)


def resolve_processor_factory(settings: Settings) -> str:
    """The ``module:function`` name of the processor factory to use (see module doc)."""
    return settings.job_processor or REPORTING_FACTORY


def load_processor_factory(name: str) -> ProcessorFactory:
    """The factory of that name: the default directly, any other by import.

    Configuration errors name the setting.
    """
    if name == REPORTING_FACTORY:
        return build_processor
    module_name, _, attribute = name.partition(":")
    try:
        factory: object = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"job_processor {name!r} cannot be loaded: {exc}") from exc
    if not callable(factory):
        raise ConfigurationError(f"job_processor {name!r} is not callable")
    return cast("ProcessorFactory", factory)
