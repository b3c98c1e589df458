"""Synthetic cohort generator: CT + SEG/RTSTRUCT, FHIR NDJSON, CSV and ground truth.

There is no real patient data in this project, so every test, benchmark, demo
and training run feeds on what this package writes.  See :func:`generate_cohort`
and the layout contract in the team brief.
"""

from icibenefit.training.synth.cohort import generate_cohort
from icibenefit.training.synth.manifest import (
    CohortManifest,
    Outcomes,
    PatientEntry,
    SegmentationEntry,
    TimepointEntry,
    load_manifest,
)
from icibenefit.training.synth.outcomes import DEFAULT_SIGNAL

__all__ = [
    "DEFAULT_SIGNAL",
    "CohortManifest",
    "Outcomes",
    "PatientEntry",
    "SegmentationEntry",
    "TimepointEntry",
    "generate_cohort",
    "load_manifest",
]
