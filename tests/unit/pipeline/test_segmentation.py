"""SEG and RTSTRUCT -> tumour mask on the CT grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from icibenefit.errors import DicomInputError, GeometryError
from icibenefit.pipeline.images import load_ct_volume
from icibenefit.pipeline.segmentation import load_tumour_mask
from tests.peers.dicom_objects import (
    CtHeader,
    ct_series,
    rtstruct_from_mask,
    seg_from_mask,
    sort_by_position,
    sphere_hu,
)

SPACING = (0.7, 0.7, 1.5)
SHAPE = (24, 48, 56)


@pytest.fixture(scope="module")
def scan():
    hu, primary = sphere_hu(SHAPE, (11.3, 22.0, 25.6), 9.0, spacing=SPACING)
    _, satellite = sphere_hu(SHAPE, (12.0, 10.0, 45.0), 4.0, spacing=SPACING)
    # Rotated 180 degrees in-plane so that index and physical axes disagree.
    series = ct_series(hu, spacing=SPACING, orientation=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0))
    return series, load_ct_volume(series), primary, satellite


def _array(mask: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(mask).astype(bool)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_seg_mask_is_exactly_the_segment_on_the_ct_grid(scan) -> None:
    series, ct, primary, _ = scan
    seg = seg_from_mask(series, {"primary tumour": primary})
    result = load_tumour_mask(seg, ct)
    assert result.kind == "SEG"
    assert result.sop_instance_uid == seg.SOPInstanceUID
    assert np.array_equal(_array(result.mask), primary)
    assert result.mask.GetOrigin() == ct.image.GetOrigin()
    assert result.mask.GetDirection() == ct.image.GetDirection()
    assert result.voxel_count == int(primary.sum())


def test_seg_and_rtstruct_of_the_same_tumour_differ_only_on_the_boundary(scan, tmp_path) -> None:
    series, ct, primary, _ = scan
    seg = seg_from_mask(series, {"primary tumour": primary})
    rt = rtstruct_from_mask(series, {"primary tumour": primary})
    path = tmp_path / "rt.dcm"
    rt.save_as(path, enforce_file_format=True)
    from_seg = _array(load_tumour_mask(seg, ct).mask)
    from_rt_result = load_tumour_mask(path, ct)
    from_rt = _array(from_rt_result.mask)
    assert from_rt_result.kind == "RTSTRUCT"
    assert _dice(from_seg, from_rt) >= 0.95
    # every disagreement touches the tumour surface
    eroded = sitk.GetArrayFromImage(
        sitk.BinaryErode(sitk.GetImageFromArray(from_seg.astype(np.uint8)), [1, 1, 1])
    ).astype(bool)
    dilated = sitk.GetArrayFromImage(
        sitk.BinaryDilate(sitk.GetImageFromArray(from_seg.astype(np.uint8)), [1, 1, 1])
    ).astype(bool)
    disagreement = from_seg ^ from_rt
    assert not np.any(disagreement & eroded)
    assert not np.any(disagreement & ~dilated)


@pytest.mark.parametrize("builder", [seg_from_mask, rtstruct_from_mask])
def test_primary_tumour_by_label_else_the_largest(scan, builder) -> None:
    series, ct, primary, satellite = scan
    labelled = builder(series, {"node": satellite, "Primary Tumour": primary})
    chosen = load_tumour_mask(labelled, ct)
    assert chosen.label == "Primary Tumour"
    assert "primary-tumour label" in chosen.decisions[0]
    unlabelled = builder(series, {"lesion a": satellite, "lesion b": primary})
    chosen = load_tumour_mask(unlabelled, ct)
    assert chosen.label == "lesion b"
    assert "largest" in chosen.decisions[0]
    assert _dice(_array(chosen.mask), primary) >= 0.95
    only_node = load_tumour_mask(unlabelled, ct, primary_labels=("lesion a",))
    assert only_node.label == "lesion a"


@pytest.mark.parametrize("builder", [seg_from_mask, rtstruct_from_mask])
def test_other_frame_of_reference_is_a_geometry_error(scan, builder) -> None:
    _, ct, primary, _ = scan
    hu, _ = sphere_hu(SHAPE, (11.3, 22.0, 25.6), 9.0, spacing=SPACING)
    other = ct_series(hu, spacing=SPACING, orientation=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0))
    with pytest.raises(GeometryError, match="frame of reference"):
        load_tumour_mask(builder(other, {"primary tumour": primary}), ct)


def test_seg_on_another_grid_is_a_geometry_error(scan) -> None:
    series, ct, _, _ = scan
    finer = (0.5, 0.5, 1.5)
    hu, mask = sphere_hu(SHAPE, (11.0, 22.0, 25.0), 9.0, spacing=finer)
    other = ct_series(
        hu,
        spacing=finer,
        orientation=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
        header=CtHeader(frame_of_reference_uid=series[0].FrameOfReferenceUID),
    )
    with pytest.raises(GeometryError, match="does not lie on the CT grid"):
        load_tumour_mask(seg_from_mask(other, {"primary tumour": mask}), ct)


def test_rtstruct_contour_between_slices_is_a_geometry_error(scan) -> None:
    series, ct, primary, _ = scan
    rt = rtstruct_from_mask(series, {"primary tumour": primary})
    contour = rt.ROIContourSequence[0].ContourSequence[0]
    points = np.asarray(contour.ContourData, float).reshape(-1, 3)
    points[:, 2] += SPACING[2] / 2
    contour.ContourData = [float(v) for v in points.ravel()]
    with pytest.raises(GeometryError, match="between CT slices"):
        load_tumour_mask(rt, ct)


def test_rtstruct_holes_are_cut_out(scan) -> None:
    series, ct, primary, _ = scan
    ring = primary.copy()
    hole = np.zeros_like(primary)
    k = int(np.argmax(primary.sum(axis=(1, 2))))
    hole[k, 19:25, 23:29] = True
    ring[k] &= ~hole[k]
    result = load_tumour_mask(rtstruct_from_mask(series, {"primary tumour": ring}), ct)
    assert not _array(result.mask)[k, 20:24, 24:28].any()
    assert _dice(_array(result.mask), ring) >= 0.95


def test_empty_or_foreign_objects_are_refused(scan) -> None:
    series, ct, primary, _ = scan
    with pytest.raises(DicomInputError, match="neither"):
        load_tumour_mask(sort_by_position(series)[0], ct)
    with pytest.raises(DicomInputError, match="empty"):
        load_tumour_mask(rtstruct_from_mask(series, {"gone": np.zeros_like(primary)}), ct)


def test_fractional_seg_is_binarised_at_one_half(scan) -> None:
    series, ct, primary, _ = scan
    probability = np.where(primary, 0.9, 0.0).astype(np.float32)
    halo = sitk.GetArrayFromImage(
        sitk.BinaryDilate(sitk.GetImageFromArray(primary.astype(np.uint8)), [2, 2, 0])
    ).astype(bool)
    probability[halo & ~primary] = 0.3  # uncertain rim below one half
    seg = seg_from_mask(series, {"primary tumour": probability}, fractional=True)
    assert seg.SegmentationType == "FRACTIONAL"
    assert np.array_equal(_array(load_tumour_mask(seg, ct).mask), primary)
