"""Radiomics: known-answer shape features, parameters, normalisation, restriction."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import measure
from sklearn.base import clone

from icibenefit.errors import ConfigurationError, FeatureExtractionError
from icibenefit.pipeline.normalization import IntensityNormalizer
from icibenefit.pipeline.radiomics_features import (
    extract_radiomics,
    load_params,
    params_digest,
    restrict_params,
)
from tests.peers.dicom_objects import image_from_array, sphere_hu

SHAPE_FEATURES = [
    "original_shape_MeshVolume",
    "original_shape_SurfaceArea",
    "original_shape_VoxelVolume",
]


@pytest.fixture(scope="module")
def normalizer() -> IntensityNormalizer:
    return IntensityNormalizer().fit(np.array([-1000.0, -400.0, 0.0, 800.0]))


def _sphere(spacing, radius_vox=10.0, seed=0):
    nz = round(44 * spacing[0] / spacing[2])
    hu, mask = sphere_hu(
        (nz, 44, 44), (nz / 2 - 0.3, 22.2, 21.7), radius_vox, spacing=spacing, noise=15.0, seed=seed
    )
    return (
        image_from_array(hu.astype(np.float32), spacing, (-20.0, 30.0, -100.0)),
        image_from_array(mask.astype(np.uint8), spacing, (-20.0, 30.0, -100.0)),
        mask,
    )


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.0)])
def test_sphere_volume_and_surface_match_analytic_values(normalizer, spacing) -> None:
    image, mask_image, mask = _sphere(spacing)
    features = extract_radiomics(image, mask_image, normalizer, feature_names=SHAPE_FEATURES)
    radius = 10.0 * spacing[0]
    volume = 4.0 / 3.0 * np.pi * radius**3
    area = 4.0 * np.pi * radius**2
    # Tolerances: a voxelised sphere of radius ~10 voxels has a voxel and mesh volume
    # within 1 % of the ball's.  Marching cubes on a binary mask follows the voxel
    # staircase and overestimates a sphere's area by 8-9 % when voxels are isotropic
    # (Lindblad 2005, Image Vis. Comput. 23:111), hence the one-sided 12 % bound;
    # with 2.5x thicker slices the staircase is coarser (+14 % here), bound 20 %.
    assert features["original_shape_MeshVolume"] == pytest.approx(volume, rel=0.01)
    assert features["original_shape_VoxelVolume"] == pytest.approx(volume, rel=0.01)
    bound = 1.12 if spacing[0] == spacing[2] else 1.20
    assert area < features["original_shape_SurfaceArea"] < bound * area
    # ... and the area is exactly the marching-cubes area skimage computes on the mask.
    vertices, faces, _, _ = measure.marching_cubes(
        np.pad(mask.astype(float), 1), 0.5, spacing=spacing[::-1]
    )
    assert features["original_shape_SurfaceArea"] == pytest.approx(
        measure.mesh_surface_area(vertices, faces), rel=1e-6
    )


def test_product_parameters_follow_the_method() -> None:
    params = load_params()
    setting = params["setting"]
    assert setting["binWidth"] == 25
    assert setting["force2D"] is True
    assert setting["force2Ddimension"] == 0
    assert setting["sigma"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert set(params["imageType"]) == {
        "Original",
        "Wavelet",
        "LoG",
        "Square",
        "SquareRoot",
        "Logarithm",
        "Exponential",
        "Gradient",
        "LBP2D",
    }
    assert params["imageType"]["LBP2D"]["binWidth"] < 25
    assert "shape" in params["featureClass"]
    assert "shape2D" not in params["featureClass"]


def test_full_extraction_and_restriction_agree(normalizer) -> None:
    image, mask_image, _ = _sphere((0.8, 0.8, 2.0), radius_vox=8.0, seed=2)
    full = extract_radiomics(image, mask_image, normalizer)
    assert len(full) > 1000
    assert all(isinstance(v, float) and np.isfinite(v) for v in full.values())
    prefixes = {name.split("_")[0] for name in full}
    assert {"original", "wavelet-LH", "log-sigma-5-0-mm-3D", "lbp-2D", "gradient"} <= prefixes
    # LBP2D has several grey levels thanks to its own bin width
    assert full["lbp-2D_firstorder_Entropy"] > 1.0
    wanted = [
        "log-sigma-3-0-mm-3D_glcm_Contrast",
        "original_firstorder_Mean",
        "lbp-2D_glszm_ZoneEntropy",
        "wavelet-HL_firstorder_Median",
    ]
    restricted = extract_radiomics(image, mask_image, normalizer, feature_names=wanted)
    assert list(restricted) == wanted
    for name in wanted:
        assert restricted[name] == pytest.approx(full[name], rel=1e-9)


def test_restriction_limits_what_pyradiomics_computes() -> None:
    params = load_params()
    small = restrict_params(
        params, ["log-sigma-2-0-mm-3D_glcm_Contrast", "original_shape_Sphericity"]
    )
    assert set(small["imageType"]) == {"LoG", "Original"}
    assert small["setting"]["sigma"] == [2.0]
    assert small["featureClass"] == {"glcm": ["Contrast"], "shape": ["Sphericity"]}
    assert params_digest(small) != params_digest(params)
    with pytest.raises(FeatureExtractionError, match="not a pyradiomics feature name"):
        restrict_params(params, ["Mean"])
    with pytest.raises(FeatureExtractionError, match="image type"):
        restrict_params(params, ["wavelet2-LL_glcm_Contrast"])


def test_intensities_are_normalised_before_extraction() -> None:
    image, mask_image, mask = _sphere((1.0, 1.0, 1.0))
    a = IntensityNormalizer().fit(np.array([-1000.0, 0.0]))
    b = IntensityNormalizer().fit(np.array([-500.0, 500.0]))
    mean = ["original_firstorder_Mean"]
    scale = load_params()["setting"]["normalizeScale"]
    hu = np.clip(np.asarray(_voxels(image))[mask], -1000, 3050)
    for normalizer in (a, b):
        got = extract_radiomics(image, mask_image, normalizer, feature_names=mean)[mean[0]]
        expected = ((hu - normalizer.mean_) / normalizer.std_ * scale).mean()
        assert got == pytest.approx(expected, rel=1e-4)


def _voxels(image):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image)


def test_normalizer_follows_the_estimator_contract() -> None:
    rng = np.random.default_rng(0)
    volumes = [rng.normal(0, 300, size=(4, 8, 8)), rng.normal(-200, 500, size=(3, 8, 8))]
    fitted = IntensityNormalizer().fit(volumes)
    pooled = np.clip(np.concatenate([v.ravel() for v in volumes]), -1000, 3050)
    assert fitted.mean_ == pytest.approx(pooled.mean())
    assert fitted.std_ == pytest.approx(pooled.std())
    assert fitted.n_voxels_seen_ == pooled.size
    z = fitted.transform(np.array([-5000.0, 0.0, 9999.0]))
    assert z.dtype == np.float32
    assert z[0] == pytest.approx((-1000 - pooled.mean()) / pooled.std(), rel=1e-5)
    assert z[2] == pytest.approx((3050 - pooled.mean()) / pooled.std(), rel=1e-5)
    assert clone(fitted).get_params() == {"clip_min": -1000.0, "clip_max": 3050.0}
    with pytest.raises(ValueError, match="clip_min"):
        IntensityNormalizer(clip_min=10, clip_max=0).fit(np.array([-1000.0, 0.0]))
    with pytest.raises(ValueError, match="constant"):
        IntensityNormalizer().fit(np.full(10, -2000.0))


def test_parameter_file_refusing_per_image_normalisation(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("setting: {normalize: true}\nimageType: {Original: {}}\n")
    with pytest.raises(ConfigurationError, match="normalize"):
        load_params(path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_params(tmp_path / "absent.yaml")


@pytest.mark.filterwarnings("ignore:Applying .local_binary_pattern.:UserWarning")
def test_cropping_first_gives_what_pyradiomics_gives_on_the_whole_image(normalizer) -> None:
    import SimpleITK as sitk
    from radiomics import featureextractor

    spacing = (0.8, 0.8, 2.0)
    hu, mask = sphere_hu(
        (30, 90, 100), (12.2, 30.0, 61.0), 7.0, spacing=spacing, noise=25.0, seed=5
    )
    image = image_from_array(hu.astype(np.float32), spacing, (5.0, -7.0, 11.0))
    mask_image = image_from_array(mask.astype(np.uint8), spacing, (5.0, -7.0, 11.0))
    wanted = [
        "original_glcm_Correlation",
        "wavelet-LH_firstorder_Mean",
        "log-sigma-2-0-mm-3D_glrlm_RunEntropy",
        "lbp-2D_firstorder_Entropy",
        "gradient_ngtdm_Busyness",
    ]
    params = restrict_params(load_params(), wanted)
    ours = extract_radiomics(image, mask_image, normalizer, params=params)
    scaled = sitk.Cast(
        normalizer.transform_image(image) * float(params["setting"]["normalizeScale"]),
        sitk.sitkFloat32,
    )
    reference = featureextractor.RadiomicsFeatureExtractor(params).execute(scaled, mask_image)
    for name in wanted:
        assert ours[name] == pytest.approx(float(reference[name]), rel=1e-6), name


def test_normalizer_streams_a_generator_of_volumes() -> None:
    rng = np.random.default_rng(1)
    volumes = [rng.normal(-300, 400, size=(3, 5, 5)) for _ in range(4)]
    consumed = []

    def one_at_a_time():
        for volume in volumes:
            consumed.append(1)
            yield volume

    streamed = IntensityNormalizer().fit(one_at_a_time())
    assert len(consumed) == 4
    assert streamed.mean_ == pytest.approx(IntensityNormalizer().fit(volumes).mean_)
