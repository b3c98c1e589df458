from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from icibenefit.model_store import BundleWriter


@pytest.fixture(scope="module")
def fitted_pipeline() -> tuple[Any, np.ndarray]:
    """A small imbalanced-learn pipeline like the training code builds (SMOTE + selector + RF)."""
    from imblearn.over_sampling import SMOTE
    from imblearn.pipeline import Pipeline
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_selection import SelectKBest, f_classif
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(7)
    X = rng.normal(size=(80, 6))
    y = (X[:, 0] + rng.normal(scale=0.5, size=80) > 0.6).astype(int)
    pipeline = Pipeline(
        [
            ("impute", SimpleImputer()),
            ("scale", StandardScaler()),
            ("select", SelectKBest(f_classif, k=4)),
            ("smote", SMOTE(k_neighbors=5, random_state=0)),
            ("rf", RandomForestClassifier(n_estimators=15, random_state=0)),
        ]
    ).fit(X, y)
    return pipeline, rng.normal(size=(25, 6))


@pytest.fixture
def make_bundle(tmp_path: Path, fitted_pipeline: tuple[Any, np.ndarray]) -> Callable[..., Path]:
    import torch

    def build(version: str = "1", name: str = "demo", directory: Path | None = None) -> Path:
        writer = BundleWriter(
            directory or tmp_path / f"{name}-{version}",
            name=name,
            version=version,
            training_data_fingerprint="sha256:abc",
            endpoints=["pfs6"],
            feature_schema={"pfs6-clinical": [f"f{i}" for i in range(6)]},
            preprocessing={"hu_mean": -300.0, "hu_std": 400.0},
            intended_use={"demonstration": True, "statement": "synthetic data only"},
            recipe={"name": "farina2023"},
        )
        writer.add_estimator("pfs6-clinical", fitted_pipeline[0])
        torch.manual_seed(0)
        writer.add_tensors("cnn", torch.nn.Linear(4, 2).state_dict())
        writer.add_json("thresholds", {"pfs6": 0.5})
        return writer.write()

    return build
