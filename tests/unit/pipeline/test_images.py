"""CT series -> HU volume: geometry, rescale, decoding, refusals."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from icibenefit.errors import DicomInputError, GeometryError
from icibenefit.pipeline.images import load_ct_volume
from icibenefit.pipeline.series_selection import summarize_series
from tests.peers.dicom_objects import CtHeader, ct_series, sort_by_position

SPACING = (0.75, 0.6, 2.5)


def _hu(shape: tuple[int, int, int] = (6, 12, 10), seed: int = 0) -> np.ndarray:
    # Even integers so that slope 2 represents them exactly.
    return 2.0 * np.random.default_rng(seed).integers(-500, 1500, size=shape)


def test_volume_geometry_follows_the_headers_whatever_the_slice_order() -> None:
    hu = _hu()
    orientation = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # rotated 180 degrees in-plane
    series = ct_series(hu, spacing=SPACING, orientation=orientation, origin=(10.0, 20.0, -30.0))
    ct = load_ct_volume(series)

    image = ct.image
    assert image.GetSize() == (10, 12, 6)
    assert np.allclose(image.GetSpacing(), SPACING)
    assert image.GetPixelID() == sitk.sitkFloat32
    for k, ds in enumerate(sort_by_position(series)):
        for i, j in [(0, 0), (9, 0), (3, 11)]:
            expected = (
                np.asarray(ds.ImagePositionPatient, float)
                + i * SPACING[0] * np.asarray(orientation[:3])
                + j * SPACING[1] * np.asarray(orientation[3:])
            )
            assert np.allclose(image.TransformIndexToPhysicalPoint((i, j, k)), expected)
    assert ct.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in sort_by_position(series))
    assert ct.frame_of_reference_uid == series[0].FrameOfReferenceUID


def test_rescale_slope_and_intercept_are_applied() -> None:
    hu = _hu()
    ct = load_ct_volume(ct_series(hu, spacing=SPACING, slope=2.0, intercept=-1024.0))
    assert np.array_equal(sitk.GetArrayFromImage(ct.image), hu.astype(np.float32))
    stored = ct_series(hu, spacing=SPACING, slope=2.0, intercept=-1024.0)[0].pixel_array
    assert stored.max() < hu.max()  # the stored values really differ from HU


@pytest.mark.parametrize(
    "syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian]
)
def test_compressed_series_decode_identically(syntax: str, tmp_path) -> None:
    hu = _hu((4, 64, 48), seed=3)  # OpenJPEG needs tiles larger than its resolution levels
    plain = load_ct_volume(ct_series(hu, spacing=SPACING))
    compressed = ct_series(hu, spacing=SPACING)
    paths = []
    for n, ds in enumerate(compressed):
        if syntax == DeflatedExplicitVRLittleEndian:  # the whole dataset is deflated on write
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.compress(syntax)
        path = tmp_path / f"{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    assert all(pydicom.dcmread(p).file_meta.TransferSyntaxUID == syntax for p in paths)
    decoded = load_ct_volume(paths)
    assert decoded.image.GetSize() == plain.image.GetSize()
    assert np.array_equal(sitk.GetArrayFromImage(decoded.image), hu.astype(np.float32))


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        ([0.0, 2.5, 5.0, 8.2, 10.7, 13.2], "irregular slice spacing"),
        ([0.0, 2.5, 5.0, 10.0, 12.5, 15.0], "irregular slice spacing"),  # a missing slice
        ([0.0, 2.5, 2.5, 5.0, 7.5, 10.0], "same position"),
    ],
)
def test_irregular_missing_or_duplicate_slices_are_refused(positions, message) -> None:
    series = ct_series(_hu(), spacing=SPACING, z_positions=positions)
    with pytest.raises(GeometryError, match=message):
        load_ct_volume(series)


def test_a_single_slice_has_no_spacing() -> None:
    with pytest.raises(GeometryError, match="single slice"):
        load_ct_volume(ct_series(_hu((1, 12, 10)), spacing=SPACING))


def test_localizers_are_skipped_and_non_axial_series_refused() -> None:
    hu = _hu()
    series = ct_series(hu, spacing=SPACING)
    scout = ct_series(
        _hu((1, 12, 10)),
        orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        header=CtHeader(
            series_uid=series[0].SeriesInstanceUID, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")
        ),
    )[0]
    ct = load_ct_volume([*series, scout])
    assert ct.image.GetSize()[2] == 6
    assert ct.skipped == (f"skipped localizer {scout.SOPInstanceUID}",)

    coronal = ct_series(hu, spacing=SPACING, orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    with pytest.raises(GeometryError, match="not axial"):
        load_ct_volume(coronal)
    assert load_ct_volume(coronal, require_axial=False).image.GetSize() == (10, 12, 6)


def test_mixed_series_are_refused() -> None:
    a = ct_series(_hu(), spacing=SPACING)
    b = ct_series(_hu(), spacing=SPACING)
    with pytest.raises(DicomInputError, match="several series"):
        load_ct_volume([*a, *b])


def test_multiframe_enhanced_ct_gives_the_same_volume_as_its_single_frames() -> None:
    import highdicom as hd

    hu = _hu((5, 16, 12), seed=4)
    series = ct_series(
        hu, spacing=SPACING, slope=2.0, intercept=-1024.0, orientation=(0, 1, 0, -1, 0, 0)
    )
    single = load_ct_volume(series)
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        sort_by_position(series),
        series_instance_uid=hd.UID(),
        series_number=9,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    multi = load_ct_volume([enhanced])
    assert np.array_equal(sitk.GetArrayFromImage(multi.image), hu.astype(np.float32))
    assert multi.image.GetOrigin() == pytest.approx(single.image.GetOrigin())
    assert multi.image.GetDirection() == pytest.approx(single.image.GetDirection())
    assert multi.image.GetSpacing() == pytest.approx(single.image.GetSpacing())
    assert multi.sop_instance_uids == (enhanced.SOPInstanceUID,)
    summary = summarize_series([enhanced])
    assert summary.n_images == 5
    assert summary.axial is True
    assert summary.slice_thickness_mm == pytest.approx(SPACING[2])
