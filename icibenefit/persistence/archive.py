"""Reporting's archive: the SRs and FHIR transactions produced, and which studies were reported.

Layout under the data directory:

- ``reports/sr/<SeriesUID>/<SOPUID>.dcm`` (:class:`SrArchive`): copies of our
  SRs, the source of Predecessor Documents on a rerun;
- ``reports/pdf/<SeriesUID>/<SOPUID>.dcm`` (:class:`PdfArchive`): copies of our
  Encapsulated PDF reports, kept for the same reason (a delivered outbox item
  loses its payload) and apart from the SRs so that every file under
  ``reports/sr`` is an SR;
- ``reports/fhir/<StudyUID>/<input set>.json`` (:class:`FhirArchive`): one FHIR
  transaction per report, read by the status page's recent predictions;
- ``reports/runs/<StudyUID>`` (:class:`RunLog`): the input set of each
  study's last report.

Every write is atomic (:func:`icibenefit.durable.write_atomically`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any, Self

from pydicom import Dataset, dcmread

from icibenefit.durable import write_atomically

SR_ARCHIVE = Path("reports") / "sr"
PDF_ARCHIVE = Path("reports") / "pdf"
FHIR_ARCHIVE = Path("reports") / "fhir"
RUN_LOG = Path("reports") / "runs"


class RunLog:
    """Which studies were reported, with the input set of their last report.

    One small file per study (``<data_dir>/reports/runs/<study>``): the
    reporting cascade re-reports only studies found here.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of(cls, data_dir: Path) -> RunLog:
        """The run log of a data directory."""
        return cls(data_dir / RUN_LOG)

    def reported(self, study_uid: str) -> bool:
        """Whether ``study_uid`` was reported before."""
        return (self.root / study_uid).is_file()

    def record(self, study_uid: str, input_set: str) -> None:
        """Note the input set of the report just queued for ``study_uid``."""
        write_atomically(self.root / study_uid, input_set.encode())


class DicomReportArchive:
    """Copies of DICOM reports we produced, ``<root>/<SeriesUID>/<SOPUID>.dcm``."""

    #: Folder of this kind of report under the data directory.
    LOCATION = SR_ARCHIVE

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of(cls, data_dir: Path) -> Self:
        """The archive of this kind of report in a data directory."""
        return cls(data_dir / cls.LOCATION)

    def latest(self, series_uid: str, *, exclude: str) -> Dataset | None:
        """The report with the highest instance number in the series, other than ``exclude``."""
        folder = self.root / series_uid
        if not folder.is_dir():
            return None
        candidates = [
            dcmread(path, stop_before_pixels=True)
            for path in sorted(folder.glob("*.dcm"))
            if path.stem != exclude
        ]
        return max(candidates, key=lambda ds: int(ds.InstanceNumber), default=None)

    def save(self, report: Dataset) -> Path:
        """Write ``report`` (atomically: temporary file, fsync, rename) and return its path."""
        target = self.path_of(report)
        buffer = BytesIO()
        report.save_as(buffer, enforce_file_format=True)
        write_atomically(target, buffer.getvalue())
        return target

    def headers(self) -> Iterator[Dataset]:
        """The header (no pixel data) of every archived report, in no particular order."""
        for path in self.root.glob("*/*.dcm"):
            yield dcmread(path, stop_before_pixels=True)

    def path_of(self, ds: Dataset) -> Path:
        """Where ``ds`` is (or would be) archived."""
        return self.root / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"


class SrArchive(DicomReportArchive):
    """Copies of the SRs we produced, by series: the source of Predecessor Documents.

    Kept beside the outbox because a delivered outbox item loses its payload,
    and asking the PACS for our own earlier SR would make a rerun depend on
    the PACS being reachable.
    """

    LOCATION = SR_ARCHIVE


class PdfArchive(DicomReportArchive):
    """Copies of the Encapsulated PDF reports we produced, by series."""

    LOCATION = PDF_ARCHIVE


class FhirArchive:
    """Copies of the FHIR transactions we queued, one folder per reported study."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of(cls, data_dir: Path) -> FhirArchive:
        """The FHIR archive of a data directory."""
        return cls(data_dir / FHIR_ARCHIVE)

    def save(self, study_uid: str, name: str, transaction: dict[str, Any]) -> Path:
        """Write one transaction as ``<study_uid>/<name>.json``; return its path."""
        target = self.root / study_uid / f"{name}.json"
        write_atomically(target, json.dumps(transaction, indent=2).encode())
        return target

    def newest(self, limit: int | None = None) -> list[Path]:
        """Transaction files of every study, newest first (the folder name is the study)."""
        if not self.root.is_dir():
            return []
        files = sorted(self.root.glob("*/*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        return files if limit is None else files[:limit]

    def of_study(self, study_uid: str) -> list[Path]:
        """Transaction files of one study, oldest first."""
        return sorted((self.root / study_uid).glob("*.json"), key=lambda p: p.stat().st_mtime)
