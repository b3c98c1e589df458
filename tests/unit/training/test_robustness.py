"""ICC(3,1) against references, perturbations, robust feature selection."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from icibenefit.errors import FeatureExtractionError
from icibenefit.training.robustness import (
    PerturbationConfig,
    icc_3_1,
    perturbations,
    perturbed_features,
    select_robust_features,
)
from tests.peers.dicom_objects import image_from_array, sphere_hu

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
    dtype=float,
)


def test_icc_matches_shrout_and_fleiss() -> None:
    # Published ICC(3,1) = .71; exact from their mean squares (BMS 11.24, EMS 1.02).
    assert icc_3_1(SHROUT_FLEISS) == pytest.approx(0.714840714841, abs=1e-9)


def _r_icc(table: np.ndarray) -> float:
    rscript = shutil.which("Rscript")
    assert rscript, "Rscript is a test peer (installed by the Makefile)"
    n, k = table.shape
    values = ",".join(f"{v:.17g}" for v in table.ravel())
    program = (
        f"y <- c({values}); s <- factor(rep(1:{n}, each={k})); r <- factor(rep(1:{k}, {n}));"
        "ms <- anova(lm(y ~ s + r))[['Mean Sq']];"
        f"cat(sprintf('%.15f', (ms[1] - ms[3]) / (ms[1] + ({k} - 1) * ms[3])))"
    )
    return float(
        subprocess.run([rscript, "-e", program], capture_output=True, text=True, check=True).stdout
    )


def test_icc_matches_r_two_way_anova() -> None:
    rng = np.random.default_rng(7)
    subjects = rng.normal(0, 3, size=(12, 1))
    table = subjects + rng.normal(0, 1, size=(12, 5)) + rng.normal(0, 0.5, size=(1, 5))
    assert icc_3_1(table) == pytest.approx(_r_icc(table), abs=1e-10)


def test_icc_edge_cases() -> None:
    assert np.isnan(icc_3_1(np.ones((4, 3))))
    assert icc_3_1(np.array([[1.0, 1.0], [2.0, 2.0], [5.0, 5.0]])) == pytest.approx(1.0)
    # a constant rater offset does not lower a consistency ICC
    assert icc_3_1(np.array([[1.0, 11.0], [2.0, 12.0], [5.0, 15.0]])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        icc_3_1(np.ones((1, 3)))


@pytest.fixture(scope="module")
def scan():
    spacing = (0.8, 0.8, 2.0)
    hu, mask = sphere_hu((12, 40, 40), (6.0, 20.0, 20.0), 6.0, spacing=spacing)
    return (
        image_from_array(hu.astype(np.float32), spacing, (0.0, 0.0, 0.0)),
        image_from_array(mask.astype(np.uint8), spacing, (0.0, 0.0, 0.0)),
    )


def test_perturbations_change_what_they_should(scan) -> None:
    image, mask = scan
    versions = {
        name: (img, msk) for name, img, msk in perturbations(image, mask, PerturbationConfig())
    }
    assert next(iter(versions)) == "original"
    count = {name: int(sitk.GetArrayViewFromImage(m).sum()) for name, (_, m) in versions.items()}
    assert count["erode1"] < count["original"] < count["dilate1"]
    original = sitk.GetArrayFromImage(mask)
    shifted = sitk.GetArrayFromImage(versions["shift(1, 0, 0)"][1])
    assert np.array_equal(shifted[:, :, 1:], original[:, :, :-1])
    noisy = sitk.GetArrayFromImage(versions["noise10"][0]) - sitk.GetArrayFromImage(image)
    assert noisy.std() == pytest.approx(10.0, rel=0.05)
    for img, msk in versions.values():
        assert msk.GetOrigin() == mask.GetOrigin()
        assert img.GetSize() == image.GetSize()


def test_robust_features_are_kept_and_unstable_ones_dropped() -> None:
    rng = np.random.default_rng(3)

    def extract(image: sitk.Image, mask: sitk.Image) -> dict[str, float]:
        voxels = float(sitk.GetArrayViewFromImage(mask).sum())
        return {"volume": voxels, "jitter": float(rng.normal())}

    spacing = (1.0, 1.0, 1.0)
    tables = []
    for radius in (4.0, 6.0, 8.0, 10.0):
        hu, m = sphere_hu((24, 28, 28), (12.0, 14.0, 14.0), radius, spacing=spacing)
        tables.append(
            perturbed_features(
                image_from_array(hu.astype(np.float32), spacing, (0, 0, 0)),
                image_from_array(m.astype(np.uint8), spacing, (0, 0, 0)),
                extract,
                PerturbationConfig(),
            )
        )
    result = select_robust_features(tables, threshold=0.85)
    assert result.selected == ("volume",)
    assert result.icc["volume"] >= 0.85
    assert result.icc["jitter"] < 0.85
    assert select_robust_features(tables, threshold=1.0).selected == ()


def test_a_tumour_eroded_away_is_reported(scan) -> None:
    image, _ = scan
    tiny = np.zeros((12, 40, 40), dtype=np.uint8)
    tiny[6, 20, 20] = 1
    mask = image_from_array(tiny, (0.8, 0.8, 2.0), (0.0, 0.0, 0.0))
    with pytest.raises(FeatureExtractionError, match="erode1"):
        perturbed_features(image, mask, lambda i, m: {"x": 1.0}, PerturbationConfig())


def test_cropping_before_perturbing_keeps_the_features_of_the_whole_scan() -> None:
    from icibenefit.pipeline.normalization import IntensityNormalizer
    from icibenefit.pipeline.radiomics_features import extract_radiomics

    spacing = (0.8, 0.8, 2.0)
    hu, mask = sphere_hu((40, 120, 130), (20.0, 60.0, 40.0), 6.0, spacing=spacing, noise=20.0)
    image = image_from_array(hu.astype(np.float32), spacing, (0.0, 0.0, 0.0))
    mask_image = image_from_array(mask.astype(np.uint8), spacing, (0.0, 0.0, 0.0))
    name, cropped_image, cropped_mask = perturbations(image, mask_image, PerturbationConfig())[0]
    assert name == "original"
    assert cropped_image.GetSize()[0] < image.GetSize()[0]
    normalizer = IntensityNormalizer().fit(np.array([-1000.0, 0.0, 100.0]))
    wanted = ["log-sigma-3-0-mm-3D_glcm_Contrast", "wavelet-HH_firstorder_Mean"]
    whole = extract_radiomics(image, mask_image, normalizer, feature_names=wanted)
    cropped = extract_radiomics(cropped_image, cropped_mask, normalizer, feature_names=wanted)
    for feature in wanted:
        assert cropped[feature] == pytest.approx(whole[feature], rel=1e-9)
