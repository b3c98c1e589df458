"""The generated cohort follows the layout contract and its references resolve."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from icibenefit.domain import Analyte, LabTimepoint
from icibenefit.synth import load_manifest
from icibenefit.synth.anatomy import LUNG_HU


def _ct(cohort: Path, ct_dir: str) -> list[pydicom.Dataset]:
    files = sorted((cohort / ct_dir).glob("*.dcm"), key=lambda p: int(p.stem))
    return [pydicom.dcmread(f) for f in files]


def test_manifest_lists_files_that_exist(small_cohort: Path) -> None:
    manifest = load_manifest(small_cohort)
    assert len(manifest.patients) == 12
    for patient in manifest.patients:
        assert patient.timepoints[0].label == "baseline"
        assert patient.clinical_record.patient_id == patient.patient_id
        for tp in patient.timepoints:
            files = list((small_cohort / tp.ct_dir).glob("*.dcm"))
            assert len(files) == tp.n_slices == 24
            if tp.segmentation is not None:
                assert (small_cohort / tp.segmentation.path).is_file()
                assert tp.tumour_volume_ml > 0
            else:
                assert tp.tumour_volume_ml == 0
    for name in ("Patient", "Observation", "MedicationAdministration", "Condition"):
        assert (small_cohort / "fhir" / f"{name}.ndjson").stat().st_size > 0
    header = (small_cohort / "clinical.csv").read_text().splitlines()
    assert len(header) == 13
    assert json.loads((small_cohort / "manifest.json").read_text())["seed"] == 9


def test_both_segmentation_kinds_present(small_cohort: Path) -> None:
    kinds = {
        tp.segmentation.kind
        for p in load_manifest(small_cohort).patients
        for tp in p.timepoints
        if tp.segmentation is not None
    }
    assert kinds == {"SEG", "RTSTRUCT"}


def test_ct_geometry_is_consistent(small_cohort: Path) -> None:
    tp = load_manifest(small_cohort).patients[0].timepoints[0]
    slices = _ct(small_cohort, tp.ct_dir)
    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert np.allclose(np.diff(z), float(slices[0].SliceThickness))
    for k, ds in enumerate(slices):
        assert ds.InstanceNumber == k + 1
        assert float(ds.SliceLocation) == pytest.approx(z[k])
        assert ds.SeriesInstanceUID == tp.series_uid
        assert ds.StudyInstanceUID == tp.study_uid
        assert ds.FrameOfReferenceUID == tp.frame_of_reference_uid
        assert ds.StudyDate == tp.study_date.strftime("%Y%m%d")
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]


def test_seg_references_resolve_and_mask_covers_tumour(small_cohort: Path) -> None:
    checked = 0
    for patient in load_manifest(small_cohort).patients:
        for tp in patient.timepoints:
            if tp.segmentation is None or tp.segmentation.kind != "SEG":
                continue
            slices = _ct(small_cohort, tp.ct_dir)
            by_uid = {ds.SOPInstanceUID: k for k, ds in enumerate(slices)}
            seg = pydicom.dcmread(small_cohort / tp.segmentation.path)
            assert seg.SOPInstanceUID == tp.segmentation.sop_instance_uid
            assert seg.FrameOfReferenceUID == tp.frame_of_reference_uid
            assert seg.SegmentSequence[0].SegmentLabel == tp.segmentation.segment_label
            frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
            hu = np.stack(
                [
                    ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                    for ds in slices
                ]
            )
            mask = np.zeros(hu.shape, dtype=bool)
            for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
                ref = (
                    item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                )
                assert ref in by_uid
                mask[by_uid[ref]] |= frame.astype(bool)
            assert mask.sum() * np.prod([5.0, 5.5, 5.5]) / 1000 == pytest.approx(
                tp.tumour_volume_ml, abs=1e-3
            )
            # Soft-tissue attenuation inside, far from lung parenchyma.
            assert hu[mask].mean() > LUNG_HU + 600
            checked += 1
    assert checked >= 5


def test_csv_agrees_with_the_manifest(small_cohort: Path) -> None:
    with (small_cohort / "clinical.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    patients = load_manifest(small_cohort).patients
    assert [row["patient_id"] for row in rows] == [p.patient_id for p in patients]
    for row, patient in zip(rows, patients, strict=True):
        record = patient.clinical_record
        assert row["treatment_start"] == patient.treatment_start.isoformat()
        assert float(row["pfs_months"]) == patient.outcomes.pfs_months
        assert row["os_event"] == str(patient.outcomes.os_event)
        value = record.panel(LabTimepoint.BASELINE).get(Analyte.NEUTROPHILS)
        assert row["baseline_neutrophils"] == ("" if value is None else str(value))


def test_fixture_covers_every_case(small_cohort: Path) -> None:
    """Other areas' tests rely on the shared fixture containing each situation."""
    patients = load_manifest(small_cohort).patients
    assert {len(p.timepoints) - 1 for p in patients} == {0, 1, 2}
    vanished = [tp for p in patients for tp in p.timepoints[1:] if tp.segmentation is None]
    assert vanished
    assert all(tp.tumour_volume_ml == 0 for tp in vanished)
    assert any(
        len(p.timepoints) == 3 and all(tp.segmentation for tp in p.timepoints) for p in patients
    )
