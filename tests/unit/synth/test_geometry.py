"""An independent reader (SimpleITK/GDCM) sees the geometry the generator meant."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from icibenefit.synth import load_manifest


def _read_series(directory: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(directory)))
    return reader.Execute()


def _centroid_mm(cohort: Path, ct_dir: str, seg_path: str) -> np.ndarray:
    """Tumour centroid in patient mm, from the SEG frames' own plane positions."""
    seg = hd.seg.segread(cohort / seg_path)
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    ct = pydicom.dcmread(next((cohort / ct_dir).glob("*.dcm")), stop_before_pixels=True)
    row_mm, col_mm = (float(v) for v in ct.PixelSpacing)
    points = []
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        x0, y0, z = (float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
        rows, cols = np.nonzero(frame)
        points.append(
            np.column_stack([x0 + cols * col_mm, y0 + rows * row_mm, np.full(len(rows), z)])
        )
    return np.concatenate(points).mean(axis=0)


def test_sitk_reads_the_intended_geometry(small_cohort: Path) -> None:
    patient = load_manifest(small_cohort).patients[1]
    for tp in patient.timepoints:
        image = _read_series(small_cohort / tp.ct_dir)
        assert image.GetSize() == (64, 64, 24)
        assert image.GetSpacing() == pytest.approx((5.5, 5.5, 5.0))
        assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
        first = pydicom.dcmread(small_cohort / tp.ct_dir / "1.dcm", stop_before_pixels=True)
        assert image.GetOrigin() == pytest.approx([float(v) for v in first.ImagePositionPatient])
        hu = sitk.GetArrayFromImage(image)
        assert hu.min() >= -1024
        assert -1000 <= np.median(hu[:, 0, :]) <= -950  # the first row is air in front of the chest


def test_followups_are_repositioned_but_show_the_same_tumour(small_cohort: Path) -> None:
    compared = 0
    for patient in load_manifest(small_cohort).patients:
        tps = [tp for tp in patient.timepoints if tp.segmentation and tp.segmentation.kind == "SEG"]
        if len(tps) < 2:
            continue
        origins = {
            tuple(pydicom.dcmread(small_cohort / tp.ct_dir / "1.dcm").ImagePositionPatient)
            for tp in tps
        }
        assert len(origins) == len(tps)  # each visit has its own table position
        assert tps[0].segmentation is not None
        assert tps[1].segmentation is not None
        before = _centroid_mm(small_cohort, tps[0].ct_dir, tps[0].segmentation.path)
        after = _centroid_mm(small_cohort, tps[1].ct_dir, tps[1].segmentation.path)
        assert np.linalg.norm(before - after) < 12.0
        compared += 1
    assert compared >= 2
