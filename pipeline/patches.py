"""The CNN input: 5 axial slices of 47 x 47 pixels covering 10 x 10 cm around the tumour.

Choices the paper leaves open, made here:

* Centre: the tumour mask's physical centroid (SimpleITK label statistics).
  In-plane, the 47 x 47 grid is centred exactly on it; through-plane, the
  middle slice is the native CT slice nearest to it and the 5 slices are that
  slice and its two neighbours on each side, at the CT's native slice spacing.
  Slices are therefore original reconstructions, never blends of two, and a
  patch spans 5 native slices whatever the slice thickness (as NoduleX's
  "5 slices").  The through-plane offset of the centroid is at most half a
  slice.
* Pixel grid: 47 pixels over 100 mm edge to edge, i.e. 100/47 = 2.128 mm per
  pixel, pixel centres from -48.94 mm to +48.94 mm around the centre, axes
  along the CT's row and column directions.
* Resampling: SimpleITK linear interpolation in physical space after an
  in-plane Gaussian anti-aliasing filter of sigma = (target - source
  spacing) / 2 (the rule ``skimage.transform.resize`` uses), applied only to a
  crop around the patch.  Outside the scanned volume the patch is air
  (-1000 HU).
* Intensities: clipped to [-1000, 3050] HU and z-scored with the bundle's
  :class:`~icibenefit.pipeline.normalization.IntensityNormalizer`.
* Mask patch (for checks and tests): the mask resampled linearly and
  thresholded at 0.5, which keeps its centroid in place better than
  nearest-neighbour resampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from icibenefit.errors import FeatureExtractionError
from icibenefit.pipeline.normalization import HU_CLIP_MIN, IntensityNormalizer

PATCH_SIDE_MM = 100.0
PATCH_PIXELS = 47
PATCH_SLICES = 5


@dataclass(frozen=True)
class TumourPatch:
    """One tumour's CNN input and the grid it was sampled on.

    Attributes
    ----------
    image
        float32 ``(5, 47, 47)``: clipped, z-scored intensities (slices, rows, columns).
    mask
        uint8 ``(5, 47, 47)``: the tumour mask on the same grid.
    centroid
        The tumour centroid (LPS, mm) the patch is centred on in-plane.
    grid
        An image with the patch's geometry (origin, spacing, direction) for
        mapping patch pixels back to physical space.
    """

    image: np.ndarray
    mask: np.ndarray
    centroid: tuple[float, float, float]
    grid: sitk.Image


def tumour_centroid(mask: sitk.Image) -> tuple[float, float, float]:
    """Physical (LPS, mm) centroid of the non-zero voxels of ``mask``.

    The mean voxel index mapped to physical space: the index-to-point map is
    affine, so this equals the mean of the voxels' physical centres (what
    ``sitk.LabelShapeStatisticsImageFilter`` reports) without a pass of that
    filter over a whole CT.
    """
    indices = np.nonzero(sitk.GetArrayViewFromImage(mask))
    if indices[0].size == 0:
        raise FeatureExtractionError("the tumour mask is empty: no centroid")
    z, y, x = (float(axis.mean()) for axis in indices)
    point = mask.TransformContinuousIndexToPhysicalPoint((x, y, z))
    return float(point[0]), float(point[1]), float(point[2])


def patch_grid(
    ct: sitk.Image,
    centroid: tuple[float, float, float],
    *,
    side_mm: float = PATCH_SIDE_MM,
    pixels: int = PATCH_PIXELS,
    slices: int = PATCH_SLICES,
) -> sitk.Image:
    """An empty image with the patch geometry (see the module docstring)."""
    if pixels < 1 or slices < 1 or side_mm <= 0:
        raise ValueError("patch size, slice count and side must be positive")
    index = ct.TransformPhysicalPointToContinuousIndex(centroid)
    centre = np.asarray(
        ct.TransformContinuousIndexToPhysicalPoint((index[0], index[1], float(round(index[2]))))
    )
    direction = np.asarray(ct.GetDirection(), dtype=float).reshape(3, 3)
    pixel = side_mm / pixels
    spacing = np.array([pixel, pixel, ct.GetSpacing()[2]])
    half_extent = spacing * (np.array([pixels, pixels, slices]) - 1) / 2.0
    origin = centre - direction @ half_extent
    grid = sitk.Image(pixels, pixels, slices, sitk.sitkUInt8)
    grid.SetSpacing(tuple(float(v) for v in spacing))
    grid.SetOrigin(tuple(float(v) for v in origin))
    grid.SetDirection(ct.GetDirection())
    return grid


def tumour_patch(
    ct: sitk.Image,
    mask: sitk.Image,
    normalizer: IntensityNormalizer,
    *,
    side_mm: float = PATCH_SIDE_MM,
    pixels: int = PATCH_PIXELS,
    slices: int = PATCH_SLICES,
) -> TumourPatch:
    """Sample the CNN input patch of the tumour in ``mask`` from the HU image ``ct``.

    Raises
    ------
    FeatureExtractionError
        When the mask is empty.
    """
    centroid = tumour_centroid(mask)
    grid = patch_grid(ct, centroid, side_mm=side_mm, pixels=pixels, slices=slices)
    region = _region_under(ct, grid)
    if region is None:  # the patch lies outside the scan: resampling fills it with air
        source, mask_source = ct, mask
    else:
        source, mask_source = (sitk.RegionOfInterest(im, *region) for im in (ct, mask))
    hu = sitk.Resample(
        _anti_alias(sitk.Cast(source, sitk.sitkFloat32), grid.GetSpacing()[0]),
        grid,
        sitk.Transform(),
        sitk.sitkLinear,
        HU_CLIP_MIN,
        sitk.sitkFloat32,
    )
    mask_fraction = sitk.Resample(
        sitk.Cast(mask_source != 0, sitk.sitkFloat32),
        grid,
        sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    return TumourPatch(
        image=normalizer.transform(sitk.GetArrayViewFromImage(hu)),
        mask=(sitk.GetArrayFromImage(mask_fraction) >= 0.5).astype(np.uint8),
        centroid=centroid,
        grid=grid,
    )


def _region_under(ct: sitk.Image, grid: sitk.Image) -> tuple[list[int], list[int]] | None:
    """``(size, index)`` of the part of ``ct`` under the patch grid, +2 voxels of margin."""
    size = np.asarray(grid.GetSize())
    corners = [
        ct.TransformPhysicalPointToContinuousIndex(
            grid.TransformIndexToPhysicalPoint(tuple(int(c) for c in corner))
        )
        for corner in np.array(np.meshgrid(*[[0, s - 1] for s in size])).T.reshape(-1, 3)
    ]
    extent = np.asarray(ct.GetSize())
    low = np.clip(np.floor(np.min(corners, axis=0)).astype(int) - 2, 0, extent)
    high = np.clip(np.ceil(np.max(corners, axis=0)).astype(int) + 3, 0, extent)
    if np.any(high <= low):
        return None
    return [int(v) for v in high - low], [int(v) for v in low]


def _anti_alias(image: sitk.Image, target_spacing: float) -> sitk.Image:
    """In-plane Gaussian with sigma = (target - source spacing) / 2 before downsampling."""
    sigmas = [max(0.0, (target_spacing - source) / 2.0) for source in image.GetSpacing()[:2]]
    if max(sigmas) == 0.0:
        return image
    return sitk.DiscreteGaussian(
        image, variance=[sigmas[0] ** 2, sigmas[1] ** 2, 0.0], useImageSpacing=True
    )
