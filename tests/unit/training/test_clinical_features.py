from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from icibenefit.domain import Analyte, ClinicalRecord, LabPanel, LabTimepoint, LabValue
from icibenefit.pipeline.clinical_features import (
    KMeansImputer,
    clinical_vector,
    feature_names,
    imputation_decisions,
    lab_observation_ids,
)

T0 = dt.date(2024, 3, 1)


def _panel(tp: LabTimepoint, **values: float) -> LabPanel:
    labs = {
        Analyte(name): LabValue(
            analyte=Analyte(name),
            value=value,
            unit="10*9/L",
            effective=dt.datetime(2024, 3, 1),
            observation_id=f"obs-{tp.value}-{name}",
        )
        for name, value in values.items()
    }
    return LabPanel(timepoint=tp, values=labs)


def _record(**labs: LabPanel) -> ClinicalRecord:
    return ClinicalRecord(
        patient_id="P1",
        sex="female",
        birth_date=dt.date(1960, 3, 1),
        treatment_start=T0,
        treatment_agent="Pembrolizumab",
        histology="adenocarcinoma",
        smoking_status="former",
        bmi=24.0,
        pdl1_tps=60.0,
        previous_surgery=False,
        metastasis_sites=("liver", "skin"),
        labs={LabTimepoint(k): v for k, v in labs.items()},
    )


def test_baseline_vector_names_and_values() -> None:
    record = _record(
        baseline=_panel(
            LabTimepoint.BASELINE, wbc=8.0, neutrophils=6.0, lymphocytes=1.5, platelets=300.0
        )
    )
    vector = clinical_vector(record, "baseline")
    assert vector is not None
    assert list(vector) == feature_names("baseline")
    assert vector["static.sex=female"] == 1.0
    assert vector["static.sex=male"] == 0.0
    assert vector["static.agent=pembrolizumab"] == 1.0
    assert vector["static.metastasis=liver"] == 1.0
    assert vector["static.metastasis=other"] == 1.0
    assert vector["static.age"] == pytest.approx(64.0, abs=0.01)
    assert vector["baseline.nlr"] == pytest.approx(4.0)
    assert vector["baseline.sii"] == pytest.approx(1200.0)
    assert vector["baseline.plr"] == pytest.approx(200.0)
    assert vector["baseline.dnlr"] == pytest.approx(3.0)
    assert math.isnan(vector["baseline.ldh"])


def test_followup_kinds_need_a_followup_panel() -> None:
    record = _record(baseline=_panel(LabTimepoint.BASELINE, neutrophils=6.0, lymphocytes=2.0))
    assert clinical_vector(record, "delta") is None
    assert clinical_vector(record, "longitudinal") is None


def test_delta_and_nearest_in_time_imputation() -> None:
    record = _record(
        baseline=_panel(LabTimepoint.BASELINE, neutrophils=6.0, lymphocytes=2.0),
        cycle3=_panel(LabTimepoint.CYCLE3, neutrophils=3.0, lymphocytes=2.0),
    )
    delta = clinical_vector(record, "delta")
    assert delta is not None
    assert list(delta) == feature_names("delta")
    assert delta["delta.neutrophils"] == pytest.approx(-0.5, rel=1e-5)
    assert delta["delta.lymphocytes"] == 0.0
    longitudinal = clinical_vector(record, "longitudinal")
    assert longitudinal is not None
    assert list(longitudinal) == feature_names("longitudinal")
    # cycle2 is missing: equidistant from baseline and cycle3, the earlier panel wins.
    assert longitudinal["cycle2.neutrophils"] == 6.0
    assert longitudinal["cycle3.neutrophils"] == 3.0
    assert imputation_decisions(record) == ["hemogram cycle2 missing: replaced by baseline"]
    assert lab_observation_ids(record) == sorted(
        [
            "obs-baseline-neutrophils",
            "obs-baseline-lymphocytes",
            "obs-cycle3-neutrophils",
            "obs-cycle3-lymphocytes",
        ]
    )


def test_kmeans_imputer_fills_from_nearest_centroid_and_keeps_observed() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]])
    X = np.vstack([centres[i] + rng.normal(scale=0.3, size=(40, 3)) for i in (0, 1)])
    imputer = KMeansImputer(n_clusters=2, random_state=0).fit(X)
    query = np.array([[10.2, np.nan, 9.8], [np.nan, -0.1, np.nan], [1.0, 2.0, 3.0]])
    out = imputer.transform(query)
    assert out[0, 1] == pytest.approx(10.0, abs=0.5)
    assert out[1, 0] == pytest.approx(0.0, abs=0.5)
    assert out[1, 2] == pytest.approx(0.0, abs=0.5)
    np.testing.assert_array_equal(out[2], query[2])
    assert out[0, 0] == 10.2


def test_kmeans_imputer_fits_with_missing_training_values_and_all_nan_column() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 4))
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:, 3] = np.nan
    out = KMeansImputer(n_clusters=3).fit_transform(X)
    assert not np.isnan(out).any()
    assert (out[:, 3] == 0.0).all()
    with pytest.raises(ValueError, match="n_clusters"):
        KMeansImputer(n_clusters=0).fit(X)
