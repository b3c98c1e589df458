"""A test processor that answers each study with one derived DICOM object via the outbox.

Loaded by ``icibenefit serve`` in integration tests as
``job_processor = "echo_processor:build"`` (this folder on PYTHONPATH).  The
derived object's UIDs are deterministic per (study, version), as a real
report's must be, so a retried job never sends a second, different object.
"""

from __future__ import annotations

from pydicom import dcmread
from pydicom.uid import generate_uid

from icibenefit.listener.jobs import StudyProcessor
from icibenefit.persistence.jobs import JobContext
from icibenefit.settings import Settings


class EchoProcessor:
    """Send back a copy of the study's first CT slice as a new (non-CT) series."""

    def process(self, job: JobContext) -> None:
        first = next(i for i in job.index.instances(job.study_uid) if i.modality == "CT")
        ds = dcmread(first.path)
        seed = [job.study_uid, str(job.version)]
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*seed, "series"])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[*seed, "instance"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = "icibenefit echo"
        ds.Modality = "OT"  # stands in for the SR report: not a series Orthanc routes
        ds.SeriesNumber = 900
        job.outbox.enqueue_dicom(ds, study_uid=job.study_uid, job_id=job.job_id)


def build(settings: Settings) -> StudyProcessor:
    """Factory named by ``job_processor``."""
    return EchoProcessor()


def echo_sop_instance_uid(study_uid: str, version: int = 1) -> str:
    """The SOP Instance UID the processor sends for ``study_uid``."""
    return str(generate_uid(entropy_srcs=[study_uid, str(version), "instance"]))
