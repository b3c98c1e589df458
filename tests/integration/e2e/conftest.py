"""A small demonstration bundle shared by the end-to-end tests (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

ENDPOINTS = ("pfs6", "pfs9")


@pytest.fixture(scope="session")
def demo_bundle(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo recipe (clinical + radiomics, no CNN) trained on the shared small cohort."""
    from icibenefit.demo import demo_recipe
    from icibenefit.training.deep_features import CnnBudget
    from icibenefit.training.trainer import train

    out = tmp_path_factory.mktemp("e2e-bundle") / "bundle"
    return train(
        small_cohort,
        out,
        recipe=demo_recipe(),
        trials=2,
        seed=0,
        endpoints=ENDPOINTS,
        workers=2,
        n_boot=20,
        version="e2e-1",
        cnn_budget=CnnBudget.quick(),
    ).bundle
