"""A test processor whose first attempt kills its worker process (as a segfault would).

Loaded as ``job_processor = "crash_processor:build"`` with this folder on PYTHONPATH.
"""

from __future__ import annotations

import os

from icibenefit.listener.jobs import RecordingProcessor, StudyProcessor
from icibenefit.persistence.jobs import JobContext
from icibenefit.settings import Settings


class CrashOnFirstAttempt(RecordingProcessor):
    """Die without cleanup on attempt 1; record the study on later attempts."""

    def process(self, job: JobContext) -> None:
        """Exit the process on the first attempt, else record as processed."""
        if job.attempt == 1:
            os._exit(70)
        super().process(job)


def build(settings: Settings) -> StudyProcessor:
    """Factory named by ``job_processor``."""
    return CrashOnFirstAttempt(settings)
