"""Render an LIDC nodule from its real contours into a synthetic lung CT patch.

The LIDC-IDRI images are not on this machine, only the radiologists' outlines
and ratings (:mod:`icibenefit.training.cnn.lidc`). To pretrain the CNN on
malignancy anyway, each annotation is drawn at the CNN's input geometry - 5 axial
slices, 47 x 47 pixels over 10 x 10 cm, centred on the nodule's centroid, native
slices as :mod:`icibenefit.pipeline.patches` takes them from real CTs - into a
synthetic lung background:

* parenchyma around -850 HU with smooth spatially correlated texture, a gentle
  gravity-dependent gradient, a few vessels (tubes of sub-pixel to ~2 mm radius
  whose partial-volume contrast grows with their size) and, sometimes, the chest
  wall as a soft-tissue half-plane;
* the nodule itself from its contours, anti-aliased by supersampling so that
  small nodules get partial-volume values and holes (``inclusion`` False) are
  cut out. Its shape - size, lobulation and spiculation - is the real outline;
* nodule density by the reader's texture rating: 1 ground glass (about -650 HU),
  2-3 part-solid (ground glass with a solid core that grows with the rating),
  4-5 solid (about +20 HU); calcification patterns (rating 1-5) as dense foci;
* quantum noise of ~15 HU and clipping to [-1000, 3050] HU as in the pipeline.

Which library was checked: scikit-image's ``polygon2mask`` rasterises without
partial volume and is not a declared dependency, so polygons are filled with
:class:`matplotlib.path.Path` on a supersampled grid; smoothing and distance
maps come from :mod:`scipy.ndimage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from matplotlib.path import Path as PolygonPath
from scipy import ndimage

from icibenefit.training.cnn.lidc import LidcAnnotation, LidcContour

HU_MIN: Final = -1000.0
HU_MAX: Final = 3050.0
PARENCHYMA_HU: Final = -850.0
SOFT_TISSUE_HU: Final = 40.0
SOLID_HU: Final = 20.0
GROUND_GLASS_HU: Final = -650.0
CALCIUM_HU: Final = 500.0
NOISE_HU: Final = 15.0


@dataclass(frozen=True)
class PatchGeometry:
    """Sampling of one CNN input patch.

    ``slice_spacing_mm`` None (the default) means native slices, as
    :mod:`icibenefit.pipeline.patches` does for real CTs: the middle slice is the
    annotated slice nearest the nodule's centroid and its neighbours are the
    scan's adjacent slices, so a patch spans 5 native slices whatever the slice
    thickness. A number resamples the slices at that spacing around the centroid.
    """

    n_slices: int = 5
    size: int = 47
    field_of_view_mm: float = 100.0
    slice_spacing_mm: float | None = None
    supersampling: int = 3

    def __post_init__(self) -> None:
        if self.n_slices < 1 or self.size < 3 or self.supersampling < 1:
            raise ValueError("a patch needs >= 1 slice, >= 3 pixels and supersampling >= 1")
        if self.field_of_view_mm <= 0 or (
            self.slice_spacing_mm is not None and self.slice_spacing_mm <= 0
        ):
            raise ValueError("field of view and slice spacing must be positive")

    @property
    def pixel_mm(self) -> float:
        """Edge of one pixel (about 2.13 mm for the CNN input)."""
        return self.field_of_view_mm / self.size


#: Slice gap assumed for a nodule outlined on a single slice of unknown spacing.
FALLBACK_SLICE_SPACING_MM: Final = 2.5


def _z_levels(annotation: LidcAnnotation) -> np.ndarray:
    return np.array(sorted({c.z_mm for c in annotation.contours}))


def patch_placement(
    annotation: LidcAnnotation, geometry: PatchGeometry, native_spacing_mm: float | None = None
) -> tuple[np.ndarray, float]:
    """Centre (x, y, z in mm) and slice spacing of the patch of ``annotation``.

    In-plane the centre is the region's centroid. Through-plane it is the
    centroid too when the geometry fixes a spacing; with native slices it snaps
    to the annotated slice nearest the centroid and the spacing is the scan's
    (``native_spacing_mm``, else the gap between annotated slices).
    """
    centre = annotation_centroid(annotation)
    if geometry.slice_spacing_mm is not None:
        return centre, geometry.slice_spacing_mm
    levels = _z_levels(annotation)
    gaps = np.diff(levels)
    spacing = native_spacing_mm or (float(gaps.min()) if len(gaps) else FALLBACK_SLICE_SPACING_MM)
    centre[2] = levels[np.argmin(np.abs(levels - centre[2]))]
    return centre, spacing


def _polygon_area_centroid(xy: np.ndarray) -> tuple[float, np.ndarray]:
    """Signed-area-free area and centroid of a closed polygon (shoelace formula)."""
    x, y = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2.0
    if abs(area) < 1e-9:  # a point or a line: its mean stands for the centroid
        return 0.0, xy.mean(axis=0)
    centroid = np.array([((x + x1) * cross).sum(), ((y + y1) * cross).sum()]) / (6.0 * area)
    return abs(area), centroid


def annotation_centroid(annotation: LidcAnnotation) -> np.ndarray:
    """Area-weighted (x, y, z) centroid in mm of the annotated region (holes subtracted)."""
    weights, points = [], []
    for contour in annotation.contours:
        area, centre = _polygon_area_centroid(contour.xy_mm)
        weights.append(area if contour.inclusion else -area)
        points.append([centre[0], centre[1], contour.z_mm])
    w, p = np.array(weights), np.array(points)
    if w.sum() <= 0:  # only tiny outlines: fall back to the mean point
        return np.vstack([_contour_points(c) for c in annotation.contours]).mean(axis=0)
    return (w[:, None] * p).sum(axis=0) / w.sum()


def _contour_points(contour: LidcContour) -> np.ndarray:
    return np.column_stack([contour.xy_mm, np.full(len(contour.xy_mm), contour.z_mm)])


def _slice_fraction(
    contours: list[LidcContour], centre_xy: np.ndarray, geometry: PatchGeometry
) -> np.ndarray:
    """Fraction of each pixel inside the nodule on one slice (inclusions minus holes)."""
    fine = geometry.size * geometry.supersampling
    step = geometry.pixel_mm / geometry.supersampling
    offsets = (np.arange(fine) - (fine - 1) / 2.0) * step
    xs, ys = centre_xy[0] + offsets, centre_xy[1] + offsets  # columns = x, rows = y
    inside = np.zeros((fine, fine), dtype=bool)
    for contour in sorted(contours, key=lambda c: not c.inclusion):  # holes last
        if len(contour.xy_mm) < 3:
            continue
        # Test only the sub-grid under the outline's bounding box: nodules are a
        # few pixels wide, so this makes rasterising ~50 times cheaper.
        low, high = contour.xy_mm.min(axis=0), contour.xy_mm.max(axis=0)
        c0, c1 = np.searchsorted(xs, low[0]), np.searchsorted(xs, high[0], side="right")
        r0, r1 = np.searchsorted(ys, low[1]), np.searchsorted(ys, high[1], side="right")
        if c0 >= c1 or r0 >= r1:
            continue
        gx, gy = np.meshgrid(xs[c0:c1], ys[r0:r1])
        hit = PolygonPath(contour.xy_mm).contains_points(np.column_stack([gx.ravel(), gy.ravel()]))
        hit = hit.reshape(gx.shape)
        if contour.inclusion:
            inside[r0:r1, c0:c1] |= hit
        else:
            inside[r0:r1, c0:c1] &= ~hit
    blocks = inside.reshape(geometry.size, geometry.supersampling, geometry.size, -1)
    return blocks.mean(axis=(1, 3))


def nodule_fraction(
    annotation: LidcAnnotation, geometry: PatchGeometry, centre_mm: np.ndarray, spacing_mm: float
) -> np.ndarray:
    """Partial-volume nodule mask ``[slices, rows, cols]`` centred on ``centre_mm``.

    Each patch slice takes the contours of the annotated slice nearest in z,
    provided it lies within half a slice (the larger of the patch's and the
    annotation's own slice gap); beyond the annotated extent slices are empty.
    """
    centre = np.asarray(centre_mm, dtype=float)
    z_levels = _z_levels(annotation)
    native_gap = float(np.min(np.diff(z_levels))) if len(z_levels) > 1 else 0.0
    half_window = max(spacing_mm, native_gap) / 2.0
    half = (geometry.n_slices - 1) / 2.0
    fraction = np.zeros((geometry.n_slices, geometry.size, geometry.size))
    for k in range(geometry.n_slices):
        z = centre[2] + (k - half) * spacing_mm
        nearest = z_levels[np.argmin(np.abs(z_levels - z))]
        if abs(nearest - z) > half_window + 1e-6:
            continue
        on_slice = [c for c in annotation.contours if c.z_mm == nearest]
        fraction[k] = _slice_fraction(on_slice, centre[:2], geometry)
    return fraction


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]
) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def _grid_mm(
    geometry: PatchGeometry, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, s = geometry.n_slices, geometry.size
    z = (np.arange(n) - (n - 1) / 2.0) * spacing_mm
    xy = (np.arange(s) - (s - 1) / 2.0) * geometry.pixel_mm
    return np.meshgrid(z, xy, xy, indexing="ij")  # z, y (rows), x (cols)


def lung_background(
    rng: np.random.Generator, geometry: PatchGeometry, spacing_mm: float
) -> np.ndarray:
    """Synthetic lung parenchyma with texture, vessels and sometimes chest wall (HU)."""
    shape = (geometry.n_slices, geometry.size, geometry.size)
    zz, yy, xx = _grid_mm(geometry, spacing_mm)
    image = (
        PARENCHYMA_HU + rng.normal(0.0, 25.0) + 25.0 * _smooth_noise(rng, shape, (0.8, 2.0, 2.0))
    )
    angle = rng.uniform(0, 2 * np.pi)
    image += rng.uniform(0, 40) * (np.cos(angle) * xx + np.sin(angle) * yy) / 50.0
    for _ in range(rng.poisson(5)):
        radius = rng.uniform(0.5, 2.5)
        point = rng.uniform(-50, 50, size=3) * np.array([0.2, 1.0, 1.0])
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        dz, dy, dx = zz - point[0], yy - point[1], xx - point[2]
        along = dz * direction[0] + dy * direction[1] + dx * direction[2]
        squared_distance = dz * dz + dy * dy + dx * dx - along * along
        width = max(radius, geometry.pixel_mm / 2)
        contrast = (SOFT_TISSUE_HU - PARENCHYMA_HU) * min(1.0, radius / width) ** 2
        image += contrast * np.exp(-0.5 * squared_distance / width**2)
    if rng.random() < 0.3:  # the nodule lies near the pleura: chest wall in one corner
        angle = rng.uniform(0, 2 * np.pi)
        depth = np.cos(angle) * xx + np.sin(angle) * yy - rng.uniform(20, 48)
        wall = 1.0 / (1.0 + np.exp(-depth / 1.5))
        image = image * (1 - wall) + (SOFT_TISSUE_HU + 10 * rng.standard_normal(shape)) * wall
    return np.asarray(image)


def _nodule_density(
    annotation: LidcAnnotation, fraction: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """HU inside the nodule from the texture and calcification ratings."""
    shape = fraction.shape
    solid = SOLID_HU + rng.normal(0, 15) + 20 * _smooth_noise(rng, shape, (0.5, 1.0, 1.0))
    glass = GROUND_GLASS_HU + rng.normal(0, 50) + 40 * _smooth_noise(rng, shape, (0.5, 1.0, 1.0))
    texture = annotation.texture
    if texture >= 4:
        density = solid
    elif texture == 1:
        density = glass
    else:  # part-solid: a solid core, larger for rating 3 than for 2
        depth = ndimage.distance_transform_edt(fraction > 0.5)
        core = depth >= (0.6 if texture == 3 else 0.8) * max(float(depth.max()), 1.0)
        density = np.where(ndimage.binary_dilation(core), solid, glass)
    calcification = annotation.calcification
    if calcification in (1, 2, 3, 4, 5):
        depth = ndimage.distance_transform_edt(fraction > 0.5)
        peak = max(float(depth.max()), 1.0)
        if calcification == 3:  # solid
            dense = fraction > 0.5
        elif calcification == 2:  # laminated: a ring
            dense = (depth > 0.3 * peak) & (depth < 0.6 * peak)
        elif calcification == 5:  # central
            dense = depth >= 0.6 * peak
        else:  # popcorn (1) or non-central (4): a few random foci inside the nodule
            dense = np.zeros(shape, dtype=bool)
            candidates = np.argwhere(fraction > 0.5)
            for index in (
                candidates[rng.integers(0, len(candidates), size=3)] if len(candidates) else []
            ):
                dense[tuple(index)] = True
            dense = ndimage.binary_dilation(dense, iterations=1) & (fraction > 0.2)
        density = np.where(dense, CALCIUM_HU + rng.normal(0, 100), density)
    return np.asarray(density)


def render_annotation(
    annotation: LidcAnnotation,
    rng: np.random.Generator,
    geometry: PatchGeometry | None = None,
    native_spacing_mm: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic CT patch of an annotated nodule.

    Parameters
    ----------
    annotation
        One reader's contours and ratings.
    rng
        Source of every random choice, so a seed reproduces the patch exactly.
    geometry
        Patch sampling; default the CNN input (5 native slices x 47 x 47 over 10 cm).
    native_spacing_mm
        The scan's slice spacing, used with native slices (see :func:`patch_placement`).

    Returns
    -------
    hu : numpy.ndarray
        ``[5, 47, 47]`` float32 HU clipped to [-1000, 3050].
    fraction : numpy.ndarray
        The nodule's partial-volume mask on the same grid.
    """
    geometry = geometry or PatchGeometry()
    centre, spacing = patch_placement(annotation, geometry, native_spacing_mm)
    fraction = nodule_fraction(annotation, geometry, centre, spacing)
    background = lung_background(rng, geometry, spacing)
    nodule = _nodule_density(annotation, fraction, rng)
    image = background * (1 - fraction) + nodule * fraction
    image += rng.normal(0.0, NOISE_HU, size=image.shape)
    return np.clip(image, HU_MIN, HU_MAX).astype(np.float32), fraction.astype(np.float32)
