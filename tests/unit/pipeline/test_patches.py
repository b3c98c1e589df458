"""The 5 x 47 x 47 CNN patch: shape, alignment, intensities."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from icibenefit.pipeline.normalization import IntensityNormalizer
from icibenefit.pipeline.patches import PATCH_SIDE_MM, tumour_centroid, tumour_patch
from tests.peers.dicom_objects import image_from_array, sphere_hu

SPACING = (0.72, 0.72, 2.0)


@pytest.fixture(scope="module")
def normalizer() -> IntensityNormalizer:
    return IntensityNormalizer().fit(np.array([-1000.0, -500.0, 0.0, 500.0]))


def _physical_centroid(mask: np.ndarray, grid: sitk.Image) -> np.ndarray:
    indices = np.argwhere(mask > 0)[:, ::-1].astype(float)  # (x, y, z)
    points = [grid.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in indices]
    return np.mean(points, axis=0)


@pytest.mark.parametrize(
    ("centre", "direction"),
    [
        ((20.3, 70.6, 81.2), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
        ((17.0, 60.2, 90.9), (-1, 0, 0, 0, -1, 0, 0, 0, 1)),
    ],
)
def test_mask_stays_aligned_in_the_patch(normalizer, centre, direction) -> None:
    hu, mask = sphere_hu((40, 160, 170), centre, 12.0, spacing=SPACING)
    image = image_from_array(hu.astype(np.float32), SPACING, (-60.0, -50.0, 100.0))
    image.SetDirection(direction)
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(image)

    patch = tumour_patch(image, mask_image, normalizer)
    assert patch.image.shape == (5, 47, 47)
    assert patch.image.dtype == np.float32
    assert patch.mask.shape == (5, 47, 47)
    assert np.allclose(patch.grid.GetSpacing()[:2], PATCH_SIDE_MM / 47)

    expected = np.asarray(tumour_centroid(mask_image))
    # the mask patch is (z, y, x); centroid of what landed in it, in physical space
    found = _physical_centroid(patch.mask, patch.grid)
    offset = np.asarray(image.TransformPhysicalPointToContinuousIndex(tuple(found))) - np.asarray(
        image.TransformPhysicalPointToContinuousIndex(tuple(expected))
    )
    in_plane_mm = np.abs(offset[:2]) * np.asarray(SPACING[:2])
    assert np.all(in_plane_mm <= (PATCH_SIDE_MM / 47) / 2)
    # the 5 slices are native slices, centred on the one nearest the centroid
    assert abs(offset[2]) <= 0.5
    centre_slice = patch.mask[2]
    assert centre_slice.sum() == patch.mask.sum(axis=(1, 2)).max()


def test_intensities_are_clipped_and_normalised(normalizer) -> None:
    hu, mask = sphere_hu(
        (20, 200, 200), (10.0, 100.0, 100.0), 10.0, spacing=SPACING, inside=4000.0, outside=-1500.0
    )
    image = image_from_array(hu.astype(np.float32), SPACING, (0.0, 0.0, 0.0))
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(image)
    patch = tumour_patch(image, mask_image, normalizer)
    low = (-1000.0 - normalizer.mean_) / normalizer.std_
    high = (3050.0 - normalizer.mean_) / normalizer.std_
    assert np.isclose(patch.image.min(), low, atol=1e-4)
    assert np.isclose(patch.image[2, 23, 23], high, atol=1e-4)
    assert np.isclose(patch.image[2, 0, 0], low, atol=1e-4)


def test_tumour_at_the_scan_edge_is_padded_with_air(normalizer) -> None:
    hu, mask = sphere_hu((6, 60, 60), (1.0, 30.0, 5.0), 4.0, spacing=SPACING, outside=0.0)
    image = image_from_array(hu.astype(np.float32), SPACING, (0.0, 0.0, 0.0))
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(image)
    patch = tumour_patch(image, mask_image, normalizer)
    air = (-1000.0 - normalizer.mean_) / normalizer.std_
    assert np.allclose(patch.image[0], air)  # slice below the scan
    assert np.allclose(patch.image[2, :, 0], air)  # left of the scan
    assert not np.allclose(patch.image[2, :, 30], air)
