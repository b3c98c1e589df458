"""Chest anatomy of the phantom, drawn slice by slice from analytic shapes in millimetres.

The structures are those that matter for a lung-tumour pipeline: air, a
subcutaneous fat layer, the muscular chest wall with ribs, two lungs with
pulmonary vessels (so that lung parenchyma is not a flat background a
threshold could separate from the tumour), the mediastinum with the
contrast-enhanced descending aorta, and the spine.  Everything is defined in
patient coordinates (LPS, mm), so ``small`` and ``full`` grids show the same
patient.  Drawing is windowed around each structure, keeping a 512 x 512
slice cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: HU values of the tissues (typical clinical values, venous-phase contrast).
AIR_HU = -1000.0
FAT_HU = -100.0
MUSCLE_HU = 45.0
LUNG_HU = -850.0
MEDIASTINUM_HU = 40.0
BONE_HU = 450.0
RIB_HU = 600.0
VESSEL_HU = 120.0
AORTA_HU = 180.0

#: Craniocaudal distance between ribs (mm) and rib height within it.
_RIB_PITCH_MM, _RIB_HEIGHT_MM = 26.0, 11.0
#: Angles (degrees from the patient's left-right axis) where ribs cross each slice.
_RIB_ANGLES_DEG = (25.0, 50.0, 75.0, 105.0, 130.0, 155.0, 205.0, 235.0, 265.0, 295.0, 325.0)


@dataclass(frozen=True)
class Vessel:
    """A straight pulmonary vessel from the hilum outwards, tapering along ``radii`` (mm)."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radii: tuple[float, float]


@dataclass(frozen=True)
class Anatomy:
    """Patient-specific body habitus (mm); drawn once and reused for every timepoint."""

    body_half_width: float
    body_half_depth: float
    fat_thickness: float
    lung_half_width: float
    lung_half_depth: float
    lung_offset_x: float
    lung_half_height: float
    rib_phase: float
    vessels: tuple[Vessel, ...]


def draw_anatomy(rng: np.random.Generator, vessels_per_lung: int = 28) -> Anatomy:
    """Draw body habitus within adult ranges (chest ~30-36 cm wide) and the vessel tree."""
    half_width = float(rng.uniform(150, 172))
    half_depth = float(rng.uniform(100, 122))
    lung_half_width = float(rng.uniform(52, 62))
    lung_half_depth = half_depth * float(rng.uniform(0.68, 0.76))
    lung_offset_x = float(rng.uniform(70, 80))
    lung_half_height = float(rng.uniform(120, 150))
    vessels = []
    for side in (-1.0, 1.0):
        hilum = (side * (lung_offset_x - 0.55 * lung_half_width), -5.0, float(rng.uniform(-10, 10)))
        for _ in range(vessels_per_lung):
            # End points uniformly inside 85% of the lung ellipse, any height in the chest.
            angle, radius = rng.uniform(0, 2 * np.pi), 0.85 * math.sqrt(rng.uniform(0.2, 1.0))
            end = (
                side * lung_offset_x + radius * lung_half_width * math.cos(angle),
                -5.0 + radius * lung_half_depth * math.sin(angle),
                float(rng.uniform(-0.7, 0.7) * lung_half_height),
            )
            vessels.append(
                Vessel(
                    start=hilum,
                    end=end,
                    radii=(float(rng.uniform(3, 5)), float(rng.uniform(0.8, 1.5))),
                )
            )
    return Anatomy(
        body_half_width=half_width,
        body_half_depth=half_depth,
        fat_thickness=float(rng.uniform(6, 22)),
        lung_half_width=lung_half_width,
        lung_half_depth=lung_half_depth,
        lung_offset_x=lung_offset_x,
        lung_half_height=lung_half_height,
        rib_phase=float(rng.uniform(0, _RIB_PITCH_MM)),
        vessels=tuple(vessels),
    )


def anatomy_slice(
    x: np.ndarray, y: np.ndarray, z: float, slab_mm: float, anatomy: Anatomy
) -> np.ndarray:
    """HU of the axial slice at height ``z`` on the column/row coordinates ``x``/``y`` (mm).

    ``slab_mm`` is the slice thickness: a vessel is drawn where it passes
    through the slab, so oblique vessels appear as short streaks and
    craniocaudal ones as dots, as on real CT.
    """
    yy, xx = np.meshgrid(y, x, indexing="ij")
    hu = np.full(xx.shape, AIR_HU, dtype=np.float32)
    hu[(xx / anatomy.body_half_width) ** 2 + (yy / anatomy.body_half_depth) ** 2 <= 1] = FAT_HU
    inner_w = anatomy.body_half_width - anatomy.fat_thickness
    inner_d = anatomy.body_half_depth - anatomy.fat_thickness
    hu[(xx / inner_w) ** 2 + (yy / inner_d) ** 2 <= 1] = MUSCLE_HU
    if (z - anatomy.rib_phase) % _RIB_PITCH_MM < _RIB_HEIGHT_MM:
        for degrees in _RIB_ANGLES_DEG:
            angle = math.radians(degrees)
            cx, cy = (inner_w - 9) * math.cos(angle), (inner_d - 9) * math.sin(angle)
            _fill_ellipse(hu, x, y, (cx, cy), (5.0, 5.0), RIB_HU)
    # Lungs narrow towards apex and base: an ellipsoid in z.
    taper = math.sqrt(max(1 - (z / anatomy.lung_half_height) ** 2, 0.0))
    lung = np.zeros(hu.shape, dtype=bool)
    if taper > 0:
        for side in (-1.0, 1.0):
            lung |= (
                ((xx - side * anatomy.lung_offset_x) / (anatomy.lung_half_width * taper)) ** 2
                + ((yy + 5.0) / (anatomy.lung_half_depth * taper)) ** 2
            ) <= 1
    hu[lung] = LUNG_HU
    for vessel in anatomy.vessels:
        _draw_vessel(hu, lung, x, y, z, slab_mm, vessel)
    hu[(xx / 28.0) ** 2 + ((yy + 15.0) / 45.0) ** 2 <= 1] = MEDIASTINUM_HU
    spine_y = anatomy.body_half_depth - 38.0
    _fill_ellipse(hu, x, y, (0.0, spine_y), (16.0, 16.0), BONE_HU)
    _fill_ellipse(hu, x, y, (22.0, spine_y - 22.0), (11.0, 11.0), AORTA_HU)
    return hu


def _window(coords: np.ndarray, lo: float, hi: float) -> slice:
    """Index range of the (ascending) ``coords`` within [lo, hi]."""
    return slice(int(np.searchsorted(coords, lo)), int(np.searchsorted(coords, hi, side="right")))


def _fill_ellipse(
    hu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    centre: tuple[float, float],
    half_axes: tuple[float, float],
    value: float,
) -> None:
    rows = _window(y, centre[1] - half_axes[1], centre[1] + half_axes[1])
    cols = _window(x, centre[0] - half_axes[0], centre[0] + half_axes[0])
    yy, xx = np.meshgrid(y[rows], x[cols], indexing="ij")
    inside = ((xx - centre[0]) / half_axes[0]) ** 2 + ((yy - centre[1]) / half_axes[1]) ** 2 <= 1
    hu[rows, cols][inside] = value


def _draw_vessel(
    hu: np.ndarray,
    lung: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: float,
    slab_mm: float,
    vessel: Vessel,
) -> None:
    """Draw the part of ``vessel`` inside the slab as a capsule, within the lung only."""
    start, end = np.asarray(vessel.start), np.asarray(vessel.end)
    dz = end[2] - start[2]
    half = slab_mm / 2
    if abs(dz) < 1e-6:
        if abs(z - start[2]) > half:
            return
        t0, t1 = 0.0, 1.0
    else:
        ta, tb = (z - half - start[2]) / dz, (z + half - start[2]) / dz
        t0, t1 = max(min(ta, tb), 0.0), min(max(ta, tb), 1.0)
        if t0 > t1:
            return
    a, b = start + t0 * (end - start), start + t1 * (end - start)
    radius = vessel.radii[0] + (t0 + t1) / 2 * (vessel.radii[1] - vessel.radii[0])
    rows = _window(y, min(a[1], b[1]) - radius, max(a[1], b[1]) + radius)
    cols = _window(x, min(a[0], b[0]) - radius, max(a[0], b[0]) + radius)
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return
    yy, xx = np.meshgrid(y[rows], x[cols], indexing="ij")
    seg = b[:2] - a[:2]
    length2 = float(seg @ seg)
    if length2 > 0:
        t = np.clip(((xx - a[0]) * seg[0] + (yy - a[1]) * seg[1]) / length2, 0.0, 1.0)
    else:
        t = np.zeros_like(xx)
    distance2 = (xx - a[0] - t * seg[0]) ** 2 + (yy - a[1] - t * seg[1]) ** 2
    inside = (distance2 <= radius**2) & lung[rows, cols]
    hu[rows, cols][inside] = VESSEL_HU
