"""A chest CT phantom in Hounsfield units, drawn from analytic shapes in millimetres.

Anatomy is defined in patient coordinates (mm), not voxels, so the ``small``
test grid and the ``full`` benchmark grid show the same patient; only the
sampling differs.  Volumes are built slice by slice so a 512 x 512 x 150 series
never needs more than a few slices of float arrays in memory (the machine is
shared).  The tumour is the only 3-D object; it is evaluated on its bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from icibenefit.synth.anatomy import LUNG_HU, Anatomy, anatomy_slice

#: In-plane point-spread function of the scanner (Gaussian sigma, mm).
_PSF_SIGMA_MM = 0.8
#: Depth below the tumour surface (mm) where necrosis starts (full at twice it).
NECROSIS_DEPTH_MM = 8.0


@dataclass(frozen=True)
class Grid:
    """The CT sampling: voxel counts, spacing (mm) and the position of voxel (0, 0, 0).

    ``shape`` is (slices, rows, columns); ``spacing`` is (slice, row, column) mm.
    Slices go from feet to head (increasing z), rows anterior to posterior
    (increasing y), columns right to left of the patient (increasing x), i.e.
    LPS with the identity orientation of an axial head-first-supine scan.
    ``shift`` (x, y, z mm) moves the grid against the patient: each visit has
    its own table position, so follow-ups are not voxel-aligned with the
    baseline, as on real scanners.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def origin(self) -> tuple[float, float, float]:
        """(x, y, z) mm of the first voxel: the grid is centred on ``shift``."""
        n_z, n_y, n_x = self.shape
        s_z, s_y, s_x = self.spacing
        dx, dy, dz = self.shift
        return (-(n_x - 1) * s_x / 2 + dx, -(n_y - 1) * s_y / 2 + dy, -(n_z - 1) * s_z / 2 + dz)

    def shifted(self, rng: np.random.Generator, max_mm: tuple[float, float, float]) -> Grid:
        """Return the grid moved by a random table offset of at most ``max_mm`` (0.1 mm steps)."""
        shift = tuple(round(float(rng.uniform(-m, m)), 1) for m in max_mm)
        return Grid(shape=self.shape, spacing=self.spacing, shift=(shift[0], shift[1], shift[2]))

    def z_mm(self, index: int) -> float:
        """Patient z of slice ``index``."""
        return self.origin[2] + index * self.spacing[0]

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(np.prod(self.spacing)) / 1000.0


def grid_for(size: Literal["small", "full"], n_slices_full: int = 150) -> Grid:
    """The two sampling presets.

    ``small`` (64 x 64 x 24 at 5.5 x 5.5 x 5 mm) covers the same 35 cm field of
    view as ``full`` with few voxels, so tests are fast yet tumours still span
    tens of voxels; ``full`` is a clinical 512 x 512 reconstruction at
    0.7 x 0.7 x 2.5 mm.
    """
    if size == "small":
        return Grid(shape=(24, 64, 64), spacing=(5.0, 5.5, 5.5))
    if size == "full":
        return Grid(shape=(n_slices_full, 512, 512), spacing=(2.5, 0.7, 0.7))
    raise ValueError(f"unknown size {size!r}; expected 'small' or 'full'")


@dataclass(frozen=True)
class TumourShape:
    """An irregular tumour: an ellipsoid whose radius is modulated by low-frequency noise.

    The modulation is a sum of a few sinusoids of the *direction* from the
    centre, so the shape is a smooth, lobulated blob that keeps its identity
    when it is scaled between timepoints (the same tumour, shrinking or growing).
    """

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    lobe_frequencies: tuple[tuple[float, float, float], ...]
    lobe_phases: tuple[float, ...]
    lobe_amplitudes: tuple[float, ...]


def draw_tumour(rng: np.random.Generator, anatomy: Anatomy, baseline_ml: float) -> TumourShape:
    """Place a tumour of ``baseline_ml`` inside one lung, near the grid's centre slice.

    The centre is kept within the inner part of the lung and within +-20 mm of
    the centre slice so that the tumour (even after growth) stays in the
    120 mm field of the ``small`` grid.
    """
    side = 1.0 if rng.random() < 0.5 else -1.0
    aspect = rng.uniform(0.75, 1.3, size=3)
    radius = (3 * baseline_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    semi = radius * aspect / np.prod(aspect) ** (1 / 3)
    centre = (
        side * anatomy.lung_offset_x + float(rng.uniform(-15, 15)),
        float(rng.uniform(-25, 25)),
        float(rng.uniform(-20, 20)),
    )
    n_lobes = 4
    directions = rng.standard_normal((n_lobes, 3))
    frequencies = directions * rng.uniform(1.5, 3.5, size=(n_lobes, 1))
    return TumourShape(
        centre=centre,
        semi_axes=(float(semi[0]), float(semi[1]), float(semi[2])),
        lobe_frequencies=tuple((float(f[0]), float(f[1]), float(f[2])) for f in frequencies),
        lobe_phases=tuple(float(v) for v in rng.uniform(0, 2 * np.pi, n_lobes)),
        lobe_amplitudes=tuple(float(v) for v in rng.uniform(0.04, 0.12, n_lobes)),
    )


def tumour_mask(grid: Grid, shape: TumourShape, scale: float) -> np.ndarray:
    """Boolean (slices, rows, columns) mask of the tumour scaled linearly by ``scale``."""
    mask = np.zeros(grid.shape, dtype=bool)
    if scale <= 0:
        return mask
    box = _bounding_box(grid, shape, scale)
    if box is None:
        return mask
    (z0, z1), (y0, y1), (x0, x1) = box
    ox, oy, oz = grid.origin
    s_z, s_y, s_x = grid.spacing
    z = oz + np.arange(z0, z1) * s_z - shape.centre[2]
    y = oy + np.arange(y0, y1) * s_y - shape.centre[1]
    x = ox + np.arange(x0, x1) * s_x - shape.centre[0]
    dz, dy, dx = np.meshgrid(z, y, x, indexing="ij")
    a, b, c = (axis * scale for axis in shape.semi_axes)
    distance = np.sqrt((dx / a) ** 2 + (dy / b) ** 2 + (dz / c) ** 2)
    norm = np.sqrt(dx**2 + dy**2 + dz**2) + 1e-6
    ux, uy, uz = dx / norm, dy / norm, dz / norm
    radius = np.ones_like(distance)
    for freq, phase, amp in zip(
        shape.lobe_frequencies, shape.lobe_phases, shape.lobe_amplitudes, strict=True
    ):
        radius += amp * np.sin(freq[0] * ux + freq[1] * uy + freq[2] * uz + phase)
    mask[z0:z1, y0:y1, x0:x1] = distance <= radius
    return mask


def _bounding_box(
    grid: Grid, shape: TumourShape, scale: float
) -> tuple[tuple[int, int], ...] | None:
    extent = max(shape.semi_axes) * scale * (1 + sum(shape.lobe_amplitudes))
    ox, oy, oz = grid.origin
    s_z, s_y, s_x = grid.spacing
    box = []
    for centre, origin, spacing, n in (
        (shape.centre[2], oz, s_z, grid.shape[0]),
        (shape.centre[1], oy, s_y, grid.shape[1]),
        (shape.centre[0], ox, s_x, grid.shape[2]),
    ):
        lo = max(int(np.floor((centre - extent - origin) / spacing)), 0)
        hi = min(int(np.ceil((centre + extent - origin) / spacing)) + 1, n)
        if lo >= hi:
            return None
        box.append((lo, hi))
    return tuple(box)


@dataclass(frozen=True)
class TumourAppearance:
    """Attenuation of the tumour at one timepoint.

    ``mean_hu`` and ``texture_sd`` (heterogeneity) change with the response;
    ``necrosis_hu`` is how much darker the core is in voxels deeper than
    :data:`NECROSIS_DEPTH_MM` below the surface, so only large tumours show a
    necrotic centre, and it appears or disappears as the tumour grows or shrinks.
    """

    mean_hu: float
    texture_sd: float
    necrosis_hu: float = 0.0


def render_volume(
    rng: np.random.Generator,
    grid: Grid,
    anatomy: Anatomy,
    mask: np.ndarray,
    appearance: TumourAppearance,
    noise_sd: float,
) -> np.ndarray:
    """Render the CT volume (int16 HU) of one timepoint.

    Why these steps: anatomy is drawn per slice (:mod:`.anatomy`); lung
    parenchyma gets faint smooth texture on top of the vessels; the tumour texture is
    smooth correlated noise (sigma ~3 mm) whose SD is the heterogeneity the
    response latent changes; a slight in-plane blur imitates the scanner's
    point-spread function (sigma 0.8 mm) so edges are not perfectly sharp;
    white Gaussian noise comes last, as quantum noise does.
    """
    volume = np.empty(grid.shape, dtype=np.int16)
    (z0, y0, x0), texture = _tumour_texture(rng, grid, mask, appearance)
    ox, oy, _ = grid.origin
    s_z, s_y, s_x = grid.spacing
    y = oy + np.arange(grid.shape[1]) * s_y
    x = ox + np.arange(grid.shape[2]) * s_x
    blur = tuple(_PSF_SIGMA_MM / s for s in (s_y, s_x))  # voxels, per axis
    smooth_sigma = max(4.0 / s_x, 0.5)
    for k in range(grid.shape[0]):
        hu = anatomy_slice(x, y, grid.z_mm(k), s_z, anatomy)
        lung_texture = ndimage.gaussian_filter(
            rng.standard_normal(hu.shape).astype(np.float32), smooth_sigma
        )
        lung = hu == LUNG_HU
        hu[lung] += 25.0 * lung_texture[lung] / (lung_texture.std() + 1e-6)
        if z0 <= k < z0 + texture.shape[0]:
            rows, cols = slice(y0, y0 + texture.shape[1]), slice(x0, x0 + texture.shape[2])
            inside = mask[k, rows, cols]
            hu[rows, cols][inside] = texture[k - z0][inside]
        hu = ndimage.gaussian_filter(hu, blur)
        hu += rng.normal(0.0, noise_sd, size=hu.shape).astype(np.float32)
        volume[k] = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return volume


def _tumour_texture(
    rng: np.random.Generator, grid: Grid, mask: np.ndarray, appearance: TumourAppearance
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Correlated noise around ``mean_hu`` with SD ``texture_sd`` on the mask's bounding box.

    Returns the box's first voxel (slice, row, column) and the HU block, so a
    512 x 512 x 150 series never allocates a full-size float volume.
    """
    if not mask.any():
        return (0, 0, 0), np.zeros((0, 0, 0), dtype=np.float32)
    index = np.nonzero(mask)
    lo = [int(i.min()) for i in index]
    hi = [int(i.max()) + 1 for i in index]
    sigma = tuple(3.0 / s for s in grid.spacing)
    field = ndimage.gaussian_filter(
        rng.standard_normal([b - a for a, b in zip(lo, hi, strict=True)]).astype(np.float32),
        sigma,
    )
    field /= field.std() + 1e-6
    block = appearance.mean_hu + appearance.texture_sd * field
    if appearance.necrosis_hu > 0:
        box = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        depth = ndimage.distance_transform_edt(box, sampling=grid.spacing)
        core = np.clip((depth - NECROSIS_DEPTH_MM) / NECROSIS_DEPTH_MM, 0.0, 1.0)
        block -= appearance.necrosis_hu * core.astype(np.float32)
    return (lo[0], lo[1], lo[2]), block
