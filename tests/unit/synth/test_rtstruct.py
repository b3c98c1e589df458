"""RTSTRUCT contours reference the CT and trace the tumour the manifest describes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from skimage.draw import polygon

from icibenefit.synth import load_manifest
from icibenefit.synth.anatomy import LUNG_HU


def test_rtstruct_references_resolve_and_contours_cover_tumour(small_cohort: Path) -> None:
    checked = 0
    for patient in load_manifest(small_cohort).patients:
        for tp in patient.timepoints:
            if tp.segmentation is None or tp.segmentation.kind != "RTSTRUCT":
                continue
            files = sorted((small_cohort / tp.ct_dir).glob("*.dcm"), key=lambda p: int(p.stem))
            slices = [pydicom.dcmread(f) for f in files]
            by_uid = {ds.SOPInstanceUID: ds for ds in slices}
            rt = pydicom.dcmread(small_cohort / tp.segmentation.path)
            assert rt.SOPInstanceUID == tp.segmentation.sop_instance_uid
            assert rt.StudyInstanceUID == tp.study_uid
            frame = rt.ReferencedFrameOfReferenceSequence[0]
            assert frame.FrameOfReferenceUID == tp.frame_of_reference_uid
            series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
            assert series.SeriesInstanceUID == tp.series_uid
            listed = {item.ReferencedSOPInstanceUID for item in series.ContourImageSequence}
            assert listed <= set(by_uid)
            assert rt.StructureSetROISequence[0].ROIName == tp.segmentation.segment_label
            assert (
                rt.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
                == tp.frame_of_reference_uid
            )
            inside: list[np.ndarray] = []
            area_voxels = 0
            for contour in rt.ROIContourSequence[0].ContourSequence:
                ct = by_uid[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
                assert contour.ContourGeometricType == "CLOSED_PLANAR"
                points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
                assert len(points) == contour.NumberOfContourPoints
                assert np.allclose(points[:, 2], float(ct.ImagePositionPatient[2]))
                x0, y0 = (float(v) for v in ct.ImagePositionPatient[:2])
                row_mm, col_mm = (float(v) for v in ct.PixelSpacing)
                rows, cols = polygon(
                    (points[:, 1] - y0) / row_mm,
                    (points[:, 0] - x0) / col_mm,
                    (ct.Rows, ct.Columns),
                )
                hu = ct.pixel_array.astype(float) * float(ct.RescaleSlope) + float(
                    ct.RescaleIntercept
                )
                inside.append(hu[rows, cols])
                area_voxels += len(rows)
            assert np.concatenate(inside).mean() > LUNG_HU + 600
            # Polygon rasterisation differs from the mask only at the boundary.
            voxels = tp.tumour_volume_ml * 1000 / (5.0 * 5.5 * 5.5)
            assert 0.5 * voxels < area_voxels < 1.5 * voxels
            checked += 1
    assert checked >= 3
