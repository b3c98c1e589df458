"""Rendering LIDC nodules from their contours, and reading the LIDC annotations."""

from __future__ import annotations

import numpy as np
import pytest

from icibenefit.training.cnn import lidc, render


def _circle(cx: float, cy: float, radius: float, n: int = 64) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + radius * np.cos(angle), cy + radius * np.sin(angle)])


def _annotation(
    cx: float = 120.0,
    cy: float = 80.0,
    z0: float = -100.0,
    radius: float = 8.0,
    texture: int = 5,
    calcification: int = 6,
    annotation_id: int = 1,
) -> lidc.LidcAnnotation:
    """A sphere-like nodule outlined on 2.5 mm slices (radius shrinks away from z0)."""
    contours = []
    for dz in np.arange(-radius + 1, radius, 2.5):
        r = np.sqrt(radius**2 - dz**2)
        contours.append(lidc.LidcContour(z0 + dz, True, _circle(cx, cy, r)))
    return lidc.LidcAnnotation(
        annotation_id, 1, tuple(contours), 4, texture, 1, 1, calcification, 1
    )


def _centroid(fraction: np.ndarray) -> np.ndarray:
    index = np.indices(fraction.shape).reshape(3, -1)
    return (index * fraction.ravel()).sum(axis=1) / fraction.sum()


def test_nodule_is_drawn_where_the_contour_says() -> None:
    annotation = _annotation(cx=131.7, cy=64.2, z0=-97.3)
    hu, fraction = render.render_annotation(annotation, np.random.default_rng(0))
    assert hu.shape == fraction.shape == (5, 47, 47)
    np.testing.assert_allclose(_centroid(fraction), [2, 23, 23], atol=0.25)
    # native slices: the middle one is the annotated level nearest the centroid
    # (dz = +0.5 mm, radius sqrt(64 - 0.25)); its area is that disc in patch pixels
    pixel = render.PatchGeometry().pixel_mm
    assert fraction[2].sum() * pixel**2 == pytest.approx(np.pi * (64 - 0.25), rel=0.05)
    assert fraction[0].sum() < fraction[2].sum()
    # solid nodule against aerated lung
    assert np.median(hu[2][fraction[2] > 0.99]) > -150
    assert np.median(hu[fraction < 0.01]) < -700
    assert hu.min() >= -1000
    assert hu.max() <= 3050


def test_contour_offset_moves_the_nodule_in_the_patch() -> None:
    annotation = _annotation()
    shifted_centre = render.annotation_centroid(annotation) + np.array([10 * 100 / 47, 0, 0])
    fraction = render.nodule_fraction(annotation, render.PatchGeometry(), shifted_centre, 2.5)
    # the patch centre moved +10 pixels in x, so the nodule sits 10 columns left
    np.testing.assert_allclose(_centroid(fraction), [2, 23, 13], atol=0.25)


def test_holes_are_cut_out() -> None:
    outer = lidc.LidcContour(0.0, True, _circle(50, 50, 10))
    hole = lidc.LidcContour(0.0, False, _circle(50, 50, 5))
    annotation = lidc.LidcAnnotation(1, 1, (outer, hole), 3, 5, 1, 1, 6, 1)
    fraction = render.nodule_fraction(
        annotation, render.PatchGeometry(), np.array([50, 50, 0.0]), 2.5
    )
    assert fraction[2, 23, 23] == 0.0
    pixel = render.PatchGeometry().pixel_mm
    assert fraction[2].sum() * pixel**2 == pytest.approx(np.pi * (100 - 25), rel=0.1)
    assert fraction[0].sum() == fraction[4].sum() == 0.0  # one slice only


def test_native_and_fixed_slice_spacing() -> None:
    annotation = _annotation(radius=6.0)
    native_centre, native = render.patch_placement(annotation, render.PatchGeometry(), 1.25)
    assert native == 1.25
    assert native_centre[2] in {c.z_mm for c in annotation.contours}
    fixed = render.PatchGeometry(slice_spacing_mm=5.0)
    centre, spacing = render.patch_placement(annotation, fixed, 1.25)
    assert spacing == 5.0
    np.testing.assert_allclose(centre, render.annotation_centroid(annotation))
    _, thick = render.render_annotation(annotation, np.random.default_rng(0), fixed)
    _, thin = render.render_annotation(annotation, np.random.default_rng(0), None, 1.25)
    # 5 slices 5 mm apart reach beyond the 6 mm radius, 1.25 mm apart stay inside
    assert thick[0].sum() == 0
    assert thin[0].sum() > 0


def test_texture_rating_sets_the_density() -> None:
    rng = np.random.default_rng(1)
    solid, f = render.render_annotation(_annotation(texture=5), rng)
    glass, _ = render.render_annotation(_annotation(texture=1), rng)
    calcified, _ = render.render_annotation(_annotation(texture=5, calcification=3), rng)
    core = f[2] > 0.99
    assert np.median(glass[2][core]) < -400 < np.median(solid[2][core])
    assert np.median(calcified[2][core]) > 250


def test_same_seed_same_patch() -> None:
    a, _ = render.render_annotation(_annotation(), np.random.default_rng(5))
    b, _ = render.render_annotation(_annotation(), np.random.default_rng(5))
    c, _ = render.render_annotation(_annotation(), np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_readers_of_one_nodule_are_clustered_together() -> None:
    near = [_annotation(annotation_id=i, cx=120 + 0.5 * i) for i in range(3)]
    far = _annotation(annotation_id=9, cx=20.0)
    groups = lidc.cluster_annotations([*near, far], tolerance_mm=0.7)
    assert sorted(len(g) for g in groups) == [1, 3]
    nodule = lidc.LidcNodule(
        lidc.LidcScan(1, "LIDC-IDRI-0001", "1.2", "1.2.3", 0.7, 2.5, 2.5), tuple(near)
    )
    assert nodule.mean_malignancy == 4.0
    assert nodule.label == 1


def test_installed_lidc_database_renders_its_nodules_centred() -> None:
    nodules = lidc.labelled(lidc.load_nodules(scan_ids=range(1, 41)))
    assert len(nodules) > 20
    assert {n.label for n in nodules} == {0, 1}
    assert {n.scan.scan_id for n in nodules} <= set(range(1, 41))
    assert all(1 <= len(n.annotations) <= 4 for n in nodules)
    rng = np.random.default_rng(0)
    for nodule in nodules:
        annotation = max(nodule.annotations, key=lambda a: len(a.contours))
        _, fraction = render.render_annotation(
            annotation, rng, native_spacing_mm=nodule.scan.slice_spacing_mm
        )
        if fraction.sum() < 2:  # a nodule of 1-2 pixels has no meaningful centroid
            continue
        np.testing.assert_allclose(_centroid(fraction)[1:], [23, 23], atol=1.0)
