"""Delta features, their clipping, and longitudinal vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.base import clone

from icibenefit.pipeline.delta import (
    DeltaClipper,
    delta_features,
    longitudinal_vector,
    relative_change,
)


def test_relative_change() -> None:
    assert relative_change(2.0, 3.0) == pytest.approx(0.5, rel=1e-6)
    assert relative_change(-2.0, -3.0) == pytest.approx(-0.5, rel=1e-6)
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(0.0, 1.0) == pytest.approx(1e6)
    assert math.isnan(relative_change(math.nan, 1.0))
    deltas = delta_features({"a": 4.0, "b": 1.0}, {"a": 2.0})
    assert deltas["a"] == pytest.approx(-0.5, rel=1e-6)
    assert math.isnan(deltas["b"])


def test_clipper_learns_percentile_bounds_and_keeps_nan() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 3))
    train[0, 1] = 1e6  # a near-zero baseline blow-up
    train[:, 2] = np.nan
    clipper = DeltaClipper().fit(train)
    assert clipper.lower_[0] == pytest.approx(np.percentile(train[:, 0], 1))
    assert clipper.upper_[1] == pytest.approx(np.percentile(train[:, 1], 99))
    out = clipper.transform(np.array([[100.0, -100.0, 5.0], [np.nan, 0.1, np.nan]]))
    assert out[0, 0] == pytest.approx(clipper.upper_[0])
    assert out[0, 1] == pytest.approx(clipper.lower_[1])
    assert out[0, 2] == 5.0  # an all-missing training column is not clipped
    assert np.isnan(out[1, 0])
    assert out[1, 1] == 0.1
    assert clone(clipper).get_params() == {"lower_percentile": 1.0, "upper_percentile": 99.0}
    with pytest.raises(ValueError, match="columns"):
        clipper.transform(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="percentile"):
        DeltaClipper(50, 10).fit(train)


def test_longitudinal_vector_imputes_from_the_nearest_timepoint() -> None:
    base, f1 = {"x": 1.0, "y": 2.0}, {"x": 3.0, "y": 4.0}
    vector, decisions = longitudinal_vector({"baseline": base, "followup1": f1, "followup2": None})
    assert list(vector) == [
        "baseline.x",
        "baseline.y",
        "followup1.x",
        "followup1.y",
        "followup2.x",
        "followup2.y",
    ]
    assert vector["followup2.x"] == 3.0
    assert decisions == ("followup2 missing: imputed with the followup1 features",)

    only_base, decisions = longitudinal_vector({"baseline": base})
    assert only_base["followup1.y"] == 2.0
    assert only_base["followup2.y"] == 2.0
    assert len(decisions) == 2

    # a gap between two known timepoints takes the earlier one on a tie
    gap, _ = longitudinal_vector(
        {"baseline": base, "followup1": None, "followup2": {"x": 9.0, "y": 9.0}}
    )
    assert gap["followup1.x"] == 1.0
    with pytest.raises(ValueError, match="baseline"):
        longitudinal_vector({"followup1": f1})
