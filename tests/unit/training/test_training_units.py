from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pytest

from icibenefit.domain import ClinicalRecord, ImagingTimepoint
from icibenefit.errors import ConfigurationError, TrainingError
from icibenefit.pipeline.clinical_features import feature_names
from icibenefit.pipeline.predictor import (
    ModelCatalogue,
    PatientFeatures,
    Predictor,
    TimepointFeatures,
    source_vector,
)
from icibenefit.training.cohort_manifest import Outcomes
from icibenefit.training.dataset import endpoint_label, holdout_split
from icibenefit.training.delta_bounds import learn_delta_bounds
from icibenefit.training.models import build_pipeline, positive_probability, tune_model
from icibenefit.training.recipes import Recipe, SearchSpace, available_recipes, load_recipe

T0 = dt.date(2024, 1, 10)


def _outcomes(pfs: float, event: bool) -> Outcomes:
    return Outcomes(pfs_months=pfs, pfs_event=event, os_months=pfs + 5, os_event=False)


def test_endpoint_label_landmarks_and_censoring() -> None:
    assert endpoint_label(_outcomes(7.0, True), "pfs6") == 1
    assert endpoint_label(_outcomes(7.0, True), "pfs9") == 0
    assert endpoint_label(_outcomes(6.0, True), "pfs6") == 0
    assert endpoint_label(_outcomes(5.0, False), "pfs6") is None
    assert endpoint_label(_outcomes(10.0, False), "pfs9") == 1


def test_holdout_split_is_stratified_seeded_and_sized() -> None:
    eligible = {f"P{i:03d}": (i % 4 == 0, i % 3 == 0) for i in range(171)}
    test = holdout_split(eligible, 0.25, seed=1)
    assert len(test) == round(0.25 * 171)
    assert test == holdout_split(eligible, 0.25, seed=1)
    assert test != holdout_split(eligible, 0.25, seed=2)
    strata, held = Counter(eligible.values()), Counter(eligible[p] for p in test)
    for key, count in strata.items():
        assert abs(held[key] - 0.25 * count) < 1.0


def test_recipe_is_declarative_and_validated() -> None:
    assert "farina2023" in available_recipes()
    recipe = load_recipe("farina2023")
    assert recipe.endpoints == ("pfs6", "pfs9")
    assert recipe.resample == {"pfs9": "smote"}
    assert recipe.resolve("ensemble-longitudinal", {"clinical", "dfimm"}) == (
        "ensemble-longitudinal-dfimm"
    )
    assert recipe.resolve("imaging-baseline", {"clinical", "radiomics"}) == "radiomics-baseline"
    assert recipe.with_endpoints(("pfs6",)).endpoints == ("pfs6",)
    with pytest.raises(ConfigurationError):
        load_recipe("nope")
    with pytest.raises(ValueError, match="unknown endpoints"):
        Recipe.model_validate(recipe.model_dump() | {"endpoints": ("pfs7",)})


def _rng_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(90, 8))
    y = (X[:, 0] + 0.5 * rng.normal(size=90) > 0.6).astype(int)
    X[rng.random(X.shape) < 0.1] = np.nan
    return X, y


def test_tune_model_is_deterministic_and_learns() -> None:
    X, y = _rng_data()
    space = SearchSpace(n_estimators=(20, 40), max_depth=(2, 4), k_features=(2, 8))
    kwargs = {"space": space, "trials": 2, "folds": 3, "smote": True, "smote_k_neighbors": 5}
    first = tune_model(X, y, imputer_clusters=3, seed=4, **kwargs)
    second = tune_model(X, y, imputer_clusters=3, seed=4, **kwargs)
    assert first.params == second.params
    np.testing.assert_array_equal(
        positive_probability(first.pipeline, X), positive_probability(second.pipeline, X)
    )
    assert "smote" in first.pipeline.named_steps
    assert first.cv_auc > 0.6
    with pytest.raises(TrainingError, match="too few"):
        tune_model(X[:4], np.array([0, 0, 0, 1]), imputer_clusters=3, seed=0, **kwargs)


def _timepoint(label: str, days: int, value: float) -> TimepointFeatures:
    tp = ImagingTimepoint(
        label=label,  # type: ignore[arg-type]
        study_uid=f"1.2.{days + 100}",
        series_uid=f"1.3.{days + 100}",
        study_date=T0 + dt.timedelta(days=days),
        days_from_treatment_start=days,
    )
    return TimepointFeatures(tp, {"a": value, "b": 2.0})


def _patient(*imaging: TimepointFeatures) -> PatientFeatures:
    record = ClinicalRecord(patient_id="P", treatment_start=T0)
    return PatientFeatures(record, imaging)


def test_imaging_vectors_of_each_kind() -> None:
    two = _patient(_timepoint("baseline", -10, 4.0), _timepoint("followup1", 50, 2.0))
    assert source_vector(two, "radiomics", "baseline") == {"baseline.a": 4.0, "baseline.b": 2.0}
    delta = source_vector(two, "radiomics", "delta")
    assert delta == pytest.approx({"delta.a": -0.5, "delta.b": 0.0}, rel=1e-5)
    longitudinal = source_vector(two, "radiomics", "longitudinal")
    assert longitudinal is not None
    assert longitudinal["followup2.a"] == 2.0  # missing slot: nearest available (followup1)
    clipped = source_vector(two, "radiomics", "delta", delta_bounds={"delta.a": [-0.2, 1.0]})
    assert clipped is not None
    assert clipped["delta.a"] == -0.2
    one = _patient(_timepoint("baseline", -10, 4.0))
    assert source_vector(one, "radiomics", "delta") is None
    assert source_vector(one, "radiomics", "longitudinal") is None
    assert source_vector(one, "dfimm", "baseline") is None
    assert learn_delta_bounds([{"d": float(v)} for v in range(101)]) == {"d": [1.0, 99.0]}


def test_predictor_serves_the_richest_ensemble() -> None:
    X, y = _rng_data()
    names_r = ["baseline.a", "baseline.b"]
    clinical = build_pipeline(
        n_estimators=10,
        max_depth=2,
        max_features="sqrt",
        k_features=3,
        smote_k_neighbors=None,
        imputer_clusters=2,
        seed=0,
    )
    clinical.fit(
        np.nan_to_num(X[:, :3]) @ np.zeros((3, len(feature_names("baseline")))) + X[:, :1], y
    )
    imaging = build_pipeline(
        n_estimators=10,
        max_depth=2,
        max_features="sqrt",
        k_features=2,
        smote_k_neighbors=None,
        imputer_clusters=2,
        seed=0,
    )
    imaging.fit(np.nan_to_num(X[:, :2]), y)
    models = {"pfs6-clinical-baseline": clinical, "pfs6-radiomics-baseline": imaging}
    catalogue = ModelCatalogue(
        endpoints=("pfs6",),
        feature_schema={
            "pfs6-clinical-baseline": feature_names("baseline"),
            "pfs6-radiomics-baseline": names_r,
        },
        served={"baseline": ["clinical", "radiomics"]},
    )
    predictor = Predictor(catalogue, models.__getitem__)
    with_ct = _patient(_timepoint("baseline", -10, 4.0))
    prediction = predictor.predict(with_ct, bundle_name="b", bundle_version="1", demonstration=True)
    (endpoint,) = prediction.endpoints
    assert prediction.ensemble_kind == "baseline"
    assert endpoint.model == "baseline ensemble (clinical + radiomics)"
    expected = np.mean(
        [
            predictor.probability(
                "pfs6", "clinical", "baseline", source_vector(with_ct, "clinical", "baseline") or {}
            ),
            predictor.probability(
                "pfs6", "radiomics", "baseline", {"baseline.a": 4.0, "baseline.b": 2.0}
            ),
        ]
    )
    assert endpoint.probability == pytest.approx(expected, abs=1e-12)
    assert endpoint.risk == ("high" if endpoint.probability < 0.5 else "low")
    assert len(prediction.imaging) == 1
    no_ct = predictor.predict(_patient(), bundle_name="b", bundle_version="1", demonstration=True)
    assert no_ct.endpoints[0].model == "baseline RF (clinical)"
    assert no_ct.imaging == ()
    assert any("no usable baseline CT" in d for d in no_ct.decisions)


def test_train_command_refuses_unknown_recipe_and_existing_bundle(tmp_path) -> None:
    from typer.testing import CliRunner

    from icibenefit.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app, ["train", "--cohort", str(tmp_path), "--out", str(tmp_path / "b"), "--recipe", "nope"]
    )
    assert isinstance(result.exception, ConfigurationError)
    (tmp_path / "b").mkdir()
    result = runner.invoke(app, ["train", "--cohort", str(tmp_path), "--out", str(tmp_path / "b")])
    assert isinstance(result.exception, TrainingError)
    assert "already exists" in str(result.exception)
