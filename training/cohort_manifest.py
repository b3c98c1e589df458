"""The cohort manifest: the ground truth every consumer of a synthetic cohort reads.

The layout is a contract between engineers (see the "Synthetic cohort layout"
section of the team brief), so it is a strict pydantic model: a consumer that
loads a manifest written by another version of the generator fails loudly on
an unexpected key instead of silently reading the wrong thing.  The
generator (:mod:`icibenefit.synth`) writes it and training reads it; it lives
in training because the generator may depend on training, never the reverse.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from icibenefit.domain import ClinicalRecord

#: File name of the manifest inside a cohort directory.
MANIFEST_NAME = "manifest.json"

TimepointLabel = Literal["baseline", "followup1", "followup2"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Outcomes(_Strict):
    """Survival ground truth in months (30.4375 days), with event flags (True = observed)."""

    pfs_months: float
    pfs_event: bool
    os_months: float
    os_event: bool


class SegmentationEntry(_Strict):
    """The tumour segmentation of one timepoint (a DICOM SEG or an RTSTRUCT)."""

    kind: Literal["SEG", "RTSTRUCT"]
    path: str
    sop_instance_uid: str
    segment_label: str


class TimepointEntry(_Strict):
    """One CT study; ``segmentation`` is ``None`` when the tumour is no longer visible."""

    label: TimepointLabel
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    study_date: dt.date
    ct_dir: str
    n_slices: int
    segmentation: SegmentationEntry | None
    tumour_volume_ml: float


class PatientEntry(_Strict):
    """Everything generated for one patient, with the truth behind it."""

    patient_id: str
    treatment_start: dt.date
    responder_latent: float
    outcomes: Outcomes
    clinical_record: ClinicalRecord
    timepoints: list[TimepointEntry]


class CohortManifest(_Strict):
    """Top-level manifest; paths inside are relative to the cohort directory."""

    generator: str
    seed: int
    size: Literal["small", "full"]
    signal: float
    #: ``None`` = the default outcome model (scale 1); absent from the JSON then,
    #: so default manifests stay as they were before the option existed.
    survival_scale: float | None = None
    patients: list[PatientEntry]

    def to_json(self) -> str:
        """Serialise deterministically (sorted keys, fixed indent) for byte-identical output."""
        unset = {"survival_scale"} if self.survival_scale is None else None
        return (
            json.dumps(self.model_dump(mode="json", exclude=unset), indent=1, sort_keys=True) + "\n"
        )


def load_manifest(cohort_dir: Path | str) -> CohortManifest:
    """Read and validate ``manifest.json`` of a generated cohort directory."""
    text = (Path(cohort_dir) / MANIFEST_NAME).read_text(encoding="utf-8")
    return CohortManifest.model_validate_json(text)
