"""The fitted estimators of the pipeline follow scikit-learn's estimator contract.

``__init__`` only stores parameters and ``fit`` validates them, so ``clone`` and
``set_params`` work as in any scikit-learn pipeline; ``sklearn.utils.estimator_checks``
runs the generic checks.  A check that cannot apply is listed with its reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

from icibenefit.pipeline.clinical_features import KMeansImputer
from icibenefit.pipeline.delta import DeltaClipper
from icibenefit.pipeline.normalization import IntensityNormalizer

# IntensityNormalizer is a per-voxel transform of HU volumes of any shape (or a
# stream of them), not a transform of an (n_samples, n_features) table.
INTENSITY_NORMALIZER_NOT_APPLICABLE = {
    "check_n_features_in": "per-voxel transform of volumes of any shape: no feature count",
    "check_n_features_in_after_fitting": "per-voxel transform: no feature count to compare",
    "check_transformer_general": "per-voxel transform: any number of columns is valid input",
    "check_fit1d": "a 1-D array of HU values is a valid volume",
    "check_fit2d_predict1d": "a 1-D array of HU values is a valid volume",
    "check_transformer_data_not_an_array": "fit reads a non-ndarray X as a stream of CT volumes",
    "check_transformer_preserve_dtypes": "output is float32 by design (the networks' input dtype)",
    "check_estimators_nan_inf": "HU are clipped, so +-inf are valid input (clipped to the bounds)",
    "check_estimators_empty_data_messages": "fit needs two voxels and says so in its own words",
    "check_complex_data": "input is HU read from CT files, never complex",
    "check_estimator_sparse_array": "CT volumes are dense; sparse input is not a use case",
    "check_estimator_sparse_matrix": "CT volumes are dense; sparse input is not a use case",
    "check_estimator_sparse_tag": "CT volumes are dense; sparse input is not a use case",
}


def expected_failed_checks(estimator: BaseEstimator) -> dict[str, str]:
    """The checks that cannot apply to ``estimator``, with why."""
    if isinstance(estimator, IntensityNormalizer):
        return INTENSITY_NORMALIZER_NOT_APPLICABLE
    return {}


@parametrize_with_checks(
    [DeltaClipper(), KMeansImputer(n_clusters=2), IntensityNormalizer()],
    expected_failed_checks=expected_failed_checks,
)
def test_scikit_learn_estimator_contract(estimator: BaseEstimator, check) -> None:
    check(estimator)


@pytest.mark.parametrize(
    ("estimator", "params", "match"),
    [
        (DeltaClipper(), {"lower_percentile": 50.0, "upper_percentile": 10.0}, "percentile"),
        (KMeansImputer(), {"n_clusters": 0}, "n_clusters"),
        (KMeansImputer(), {"n_iter": 0}, "n_iter"),
        (IntensityNormalizer(), {"clip_min": 10.0, "clip_max": 0.0}, "clip_min"),
    ],
)
def test_set_params_is_validated_by_fit(
    estimator: BaseEstimator, params: dict[str, float], match: str
) -> None:
    estimator.set_params(**params)  # stored as given, like any scikit-learn estimator
    with pytest.raises(ValueError, match=match):
        estimator.fit(np.array([[-1000.0, 1.0], [0.0, 2.0], [100.0, 4.0]]))


def test_normalizer_restored_from_its_statistics_is_identical() -> None:
    fitted = IntensityNormalizer().fit(np.array([-1000.0, -200.0, 40.0, 900.0]))
    restored = IntensityNormalizer.from_statistics(fitted.statistics())
    values = np.array([-3000.0, -500.0, 0.0, 5000.0])
    assert restored.get_params() == fitted.get_params()
    assert (restored.mean_, restored.std_, restored.n_voxels_seen_) == (
        fitted.mean_,
        fitted.std_,
        fitted.n_voxels_seen_,
    )
    np.testing.assert_array_equal(restored.transform(values), fitted.transform(values))


@pytest.mark.parametrize(
    ("statistics", "match"),
    [
        ({"clip_min": 10.0, "clip_max": 0.0, "mean": 0.0, "std": 1.0, "n_voxels": 2}, "clip_min"),
        ({"clip_min": -1.0, "clip_max": 1.0, "mean": 0.0, "std": 0.0, "n_voxels": 2}, "constant"),
    ],
)
def test_normalizer_statistics_are_validated_like_fit(
    statistics: dict[str, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        IntensityNormalizer.from_statistics(statistics)
