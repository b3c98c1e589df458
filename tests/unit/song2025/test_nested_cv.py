"""Nested cross-validation: disjoint stratified outer folds, no leak, ensembles, exclusions."""

from __future__ import annotations

import numpy as np
import pytest
from unit.song2025.fakes import FakeData, balanced_labels

from icibenefit.training.nested_cv import (
    min_class_size,
    nested_cross_validation,
    outer_folds,
    outer_jobs,
)
from icibenefit.training.recipes import Recipe, load_recipe


def _recipe(**changes: object) -> Recipe:
    base = load_recipe("song2025").model_dump()
    fast = {
        "search_space": {
            "n_estimators": (10, 20),
            "max_depth": (2, 3),
            "max_features": ("sqrt",),
            "k_features": (2, 3),
        },
        "default_trials": 1,
    }
    return Recipe.model_validate(base | fast | changes)


@pytest.mark.parametrize("seed", [0, 7])
def test_outer_folds_are_disjoint_cover_everyone_and_are_stratified(seed: int) -> None:
    labels = balanced_labels(37, 11, seed)
    folds = outer_folds(labels, 5, seed)
    flat = [pid for fold in folds for pid in fold]
    assert len(folds) == 5
    assert sorted(flat) == sorted(labels)
    assert len(flat) == len(set(flat))
    positives = [sum(labels[pid] for pid in fold) for fold in folds]
    sizes = [len(fold) for fold in folds]
    assert max(positives) - min(positives) <= 1
    assert max(sizes) - min(sizes) <= 1
    assert outer_folds(labels, 5, seed) == folds
    assert outer_folds(labels, 5, seed + 1) != folds


def test_min_class_size_allows_the_inner_cv_in_every_outer_training_set() -> None:
    assert min_class_size(5, 5) == 7
    assert min_class_size(5, 3) == 5
    # With exactly that many patients per class, every outer training set has
    # at least `inner` patients of each class.
    labels = balanced_labels(14, 7, 0)
    for fold in outer_folds(labels, 5, 0):
        rest = [labels[p] for p in labels if p not in fold]
        assert min(rest.count(0), rest.count(1)) >= 5


def test_outer_jobs_never_train_on_their_test_patients() -> None:
    labels = balanced_labels(30, 12, 1)
    data = FakeData({"os12": labels}, ["clinical", "radiomics"], missing={"radiomics": {"p03"}})
    folds = outer_folds(labels, 5, 0)
    jobs = outer_jobs(data, _recipe(), "os12", folds)  # type: ignore[arg-type]
    assert len(jobs) == 2 * 5
    for job in jobs:
        train_numbers = set(job.X_train[:, 0].astype(int))
        test_numbers = {int(pid[1:]) for pid in job.test_ids}
        assert not train_numbers & test_numbers
        assert set(job.test_ids) <= set(folds[job.fold])
    tested = sorted(pid for job in jobs if job.source == "radiomics" for pid in job.test_ids)
    assert tested == sorted(set(labels) - {"p03"})


def test_every_patient_gets_one_out_of_fold_score_and_ensembles_average_members() -> None:
    labels = {"os12": balanced_labels(30, 12, 2), "os36": balanced_labels(30, 3, 3)}
    data = FakeData(labels, ["clinical", "radiomics", "unet"], missing={"unet": {"p05"}})
    recipe = _recipe(endpoints=["os12", "os36"])
    titles = {"clinical": "Clinical", "radiomics": "Radiomics", "unet": "UNET"}
    results = nested_cross_validation(
        data,  # type: ignore[arg-type]
        recipe,
        trials=1,
        seed=0,
        workers=1,
        progress=False,
        titles=titles,
    )
    os12 = results["os12"]
    assert os12.excluded is None
    assert set(os12.scores["clinical-baseline"]) == set(labels["os12"])
    assert set(os12.scores["unet-baseline"]) == set(labels["os12"]) - {"p05"}
    flagship = os12.scores["ensemble-baseline-radiomics+unet"]
    assert "p05" not in flagship
    for pid, value in flagship.items():
        members = [os12.scores[f"{s}-baseline"][pid] for s in ("clinical", "radiomics", "unet")]
        assert value == pytest.approx(np.mean(members), abs=1e-15)
    aucs = os12.fold_aucs("clinical-baseline")
    assert len(aucs) == 5
    assert all(0 <= a <= 1 for a in aucs)
    assert len(os12.params["clinical-baseline"]) == 5
    # 3 event-free patients cannot fill 5 outer folds: the endpoint is reported, not estimated.
    assert results["os36"].excluded is not None
    assert "3 patients" in results["os36"].excluded
    assert results["os36"].scores == {}
