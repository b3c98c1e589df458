"""On written files, responders and non-responders differ in tumour and NLR course.

60 patients are generated (about 20 s of CPU), the tumour volume change is
read from the manifest's per-timepoint volumes (measured on the written
masks) and the NLR from the ground-truth clinical record.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from icibenefit.domain import LabTimepoint
from icibenefit.synth import load_manifest

pytestmark = pytest.mark.integration


def test_tumour_and_nlr_course_separate_responders(make_cohort) -> None:  # type: ignore[no-untyped-def]
    manifest = load_manifest(make_cohort(60, 2024))
    volume_change: list[tuple[bool, float]] = []
    nlr_change: list[tuple[bool, float]] = []
    for patient in manifest.patients:
        outcome = patient.outcomes
        if outcome.pfs_months <= 6 and not outcome.pfs_event:
            continue  # censored before the landmark: unknown PFS6 status
        responder = outcome.pfs_months > 6
        volumes = {tp.label: tp.tumour_volume_ml for tp in patient.timepoints}
        if "followup1" in volumes:
            # A vanished tumour counts as a 0.1 ml residue (below visibility).
            change = math.log(max(volumes["followup1"], 0.1) / volumes["baseline"])
            volume_change.append((responder, change))
        record = patient.clinical_record
        before = record.panel(LabTimepoint.BASELINE).nlr
        after = record.panel(LabTimepoint.CYCLE3).nlr
        if before is not None and after is not None:
            nlr_change.append((responder, math.log(after / before)))
    for name, pairs, alpha in (("volume", volume_change, 1e-3), ("nlr", nlr_change, 0.05)):
        data = np.array(pairs)
        responders, others = data[data[:, 0] == 1, 1], data[data[:, 0] == 0, 1]
        assert len(responders) >= 10, name
        assert len(others) >= 10, name
        assert np.median(responders) < np.median(others), name
        assert mannwhitneyu(responders, others, alternative="less").pvalue < alpha, name
