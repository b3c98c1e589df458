"""Synthetic cohort generator: CT + SEG/RTSTRUCT, FHIR NDJSON, CSV and ground truth.

There is no real patient data in this project, so every test, benchmark, demo
and training run feeds on what this package writes: ``generate_cohort(out_dir,
n_patients, seed, size="small", signal=DEFAULT_SIGNAL)`` and ``load_manifest(dir)``;
the layout is the contract in the team brief.

Conventions a consumer can rely on (all deterministic for a given seed):

* Identifiers: DICOM PatientID ``SYN<seed>-<nnnn>``; FHIR Patient id
  ``pat-syn<seed>-<nnnn>`` carrying the PatientID as identifier (system
  ``urn:icibenefit:synthetic:mrn`` by default); Observation ids
  ``<patient id lower-case>-<baseline|cycle2|cycle3|prior>-<analyte>``.
* Timing (days from T0, the first MedicationAdministration): baseline CT
  -55..-3; follow-up 1 at 42..63, follow-up 2 at 84..119 (not performed after
  death or end of follow-up); labs at -21..-1 (baseline), 21+-3 (cycle 2),
  42+-3 (cycle 3); in ~20% of patients an older "prior" panel at -55..-40,
  outside the 30-day baseline window, which a correct client ignores.
  Datetimes carry a fixed +01:00 offset.
* Units: canonical values (``CANONICAL_UNIT``) are rounded to
  :data:`~icibenefit.synth.clinical.CANONICAL_DECIMALS`; a patient's
  laboratory reports either canonical units, ``10*3/uL`` (x1), or ``/uL``
  (x1000) with ``g/L`` (x10) -- so ``reported / factor`` equals the record's
  value exactly.  No mmol/L haemoglobin or % differentials.
* Surgical history (``fhir/Procedure.ndjson``, completed Procedures with a
  SNOMED CT code and ``performedDateTime``): ~14% of patients had a lung
  resection 6-60 months before T0 (``previous_surgery`` is True exactly for
  them, False for everyone else), ~10% an unrelated appendectomy years
  earlier; no signal (see :func:`.clinical.draw_procedures`).  Procedure ids
  ``<fhir patient id>-procedure-<kind>``.
* Segmentations: every fourth patient (index 3, 7, ...) has RTSTRUCTs, the
  others SEGs; a tumour below 1 ml has no segmentation file.
* Signal: see :mod:`.outcomes`; at the default a logistic model on the
  observable changes reaches a PFS6 AUC of ~0.78.
* Survival: by default median OS ~10 months (36-month landmarks hardly
  estimable); ``survival_scale=LONG_SURVIVAL_SCALE`` gives a long-survival
  cohort (seed 2's) -- see :mod:`.outcomes`.
"""

from icibenefit.synth.cohort import generate_cohort
from icibenefit.synth.outcomes import (
    DEFAULT_SIGNAL,
    DEFAULT_SURVIVAL_SCALE,
    LONG_SURVIVAL_SCALE,
)
from icibenefit.training.cohort_manifest import (
    CohortManifest,
    Outcomes,
    PatientEntry,
    SegmentationEntry,
    TimepointEntry,
    load_manifest,
)

__all__ = [
    "DEFAULT_SIGNAL",
    "DEFAULT_SURVIVAL_SCALE",
    "LONG_SURVIVAL_SCALE",
    "CohortManifest",
    "Outcomes",
    "PatientEntry",
    "SegmentationEntry",
    "TimepointEntry",
    "generate_cohort",
    "load_manifest",
]
