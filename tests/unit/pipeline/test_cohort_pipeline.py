"""The imaging feature path on the synthetic cohort, from DICOM headers to CNN patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from icibenefit.domain import ClinicalRecord
from icibenefit.pipeline.images import load_ct_volume
from icibenefit.pipeline.normalization import IntensityNormalizer
from icibenefit.pipeline.patches import tumour_patch
from icibenefit.pipeline.segmentation import load_tumour_mask
from icibenefit.pipeline.timeline import build_timeline, records_from_headers
from icibenefit.synth import load_manifest


@pytest.fixture(scope="module")
def cohort(small_cohort: Path):
    return small_cohort, load_manifest(small_cohort)


def _headers(folder: Path) -> list[tuple[str, pydicom.Dataset]]:
    return [
        (str(path), pydicom.dcmread(path, stop_before_pixels=True))
        for path in sorted(folder.rglob("*.dcm"))
    ]


def test_timeline_finds_the_generated_timepoints(cohort) -> None:
    root, manifest = cohort
    for patient in manifest.patients:
        record = ClinicalRecord.model_validate(patient.clinical_record)
        timeline = build_timeline(
            records_from_headers(_headers(root / "dicom" / patient.patient_id)), record
        )
        expected = [tp for tp in patient.timepoints if tp.segmentation is not None]
        assert [e.study_uid for e in timeline.entries] == [tp.study_uid for tp in expected]
        assert [e.segmentation_sop_uid for e in timeline.entries] == [
            tp.segmentation.sop_instance_uid for tp in expected
        ]
        assert timeline.entries[0].label == "baseline"
        gone = [tp for tp in patient.timepoints if tp.segmentation is None]
        assert sum("tumour no longer visible" in d for d in timeline.decisions) == len(gone)


def test_masks_match_the_generated_tumour_volumes(cohort) -> None:
    root, manifest = cohort
    normalizer = IntensityNormalizer().fit(np.array([-1000.0, -700.0, 0.0, 60.0]))
    kinds = set()
    for patient in manifest.patients[:6]:
        for tp in patient.timepoints:
            if tp.segmentation is None:
                continue
            ct = load_ct_volume(sorted((root / tp.ct_dir).glob("*.dcm")))
            assert ct.series_uid == tp.series_uid
            assert len(ct.sop_instance_uids) == tp.n_slices
            mask = load_tumour_mask(root / tp.segmentation.path, ct)
            kinds.add(mask.kind)
            volume_ml = mask.voxel_count * float(np.prod(ct.image.GetSpacing())) / 1000.0
            # the manifest rounds to 1 ul; RTSTRUCT contours rasterise back to the same voxels
            assert volume_ml == pytest.approx(tp.tumour_volume_ml, abs=1.5e-3)
            patch = tumour_patch(ct.image, mask.mask, normalizer)
            assert patch.image.shape == (5, 47, 47)
            assert patch.mask[2].any()
    assert kinds == {"SEG", "RTSTRUCT"}
