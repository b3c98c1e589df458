from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    precision_score,
    recall_score,
)

from icibenefit.training.evaluation.classification import (
    bootstrap_indices,
    discrimination_metrics,
    threshold_metrics,
)


def test_threshold_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = rng.uniform(size=50)
    predicted = p >= 0.5
    metrics = threshold_metrics(y, predicted)
    assert metrics["acc"] == pytest.approx(accuracy_score(y, predicted))
    assert metrics["sens"] == pytest.approx(recall_score(y, predicted))
    assert metrics["spec"] == pytest.approx(recall_score(1 - y, ~predicted))
    assert metrics["prec"] == pytest.approx(precision_score(y, predicted))
    assert metrics["bacc"] == pytest.approx(balanced_accuracy_score(y, predicted))


def test_precision_is_undefined_without_predicted_positives() -> None:
    metrics = threshold_metrics(np.array([0, 1, 1]), np.array([False, False, False]))
    assert np.isnan(metrics["prec"])
    assert metrics["sens"] == 0


def test_bootstrap_intervals_bracket_point_estimates_and_are_seeded() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(scale=0.2, size=60), 0, 1)
    first = discrimination_metrics(y, p, bootstrap_indices(y, 200, seed=4))
    again = discrimination_metrics(y, p, bootstrap_indices(y, 200, seed=4))
    assert first == again
    for name in ("auc", "acc", "sens", "spec", "prec", "bacc"):
        estimate = getattr(first, name)
        assert estimate.ci[0] <= estimate.value <= estimate.ci[1], name
        assert estimate.ci[0] < estimate.ci[1], name


def test_threshold_is_inclusive() -> None:
    y = np.array([0, 1, 0, 1])
    p = np.array([0.2, 0.5, 0.49, 0.9])
    metrics = discrimination_metrics(y, p, bootstrap_indices(y, 10, 0))
    assert metrics.sens.value == 1.0
    assert metrics.spec.value == 1.0
