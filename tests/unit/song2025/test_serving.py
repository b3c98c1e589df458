"""A song2025 catalogue serves the mean of the clinical, radiomics and UNET models."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from icibenefit.domain import ClinicalRecord, ImagingTimepoint
from icibenefit.pipeline.clinical_features import feature_names
from icibenefit.pipeline.predictor import (
    ModelCatalogue,
    PatientFeatures,
    Predictor,
    TimepointFeatures,
    source_vector,
)

ENDPOINTS = ("os12", "os36", "pfs12", "pfs36")
T0 = dt.date(2024, 3, 1)


class ConstantModel:
    """Returns the same P(class 1) for every row (records the rows it saw)."""

    classes_ = np.array([0, 1])

    def __init__(self, probability: float) -> None:
        self.probability = probability
        self.rows: list[Any] = []

    def predict_proba(self, rows: Any) -> Any:
        self.rows.append(np.asarray(rows))
        return np.tile([1 - self.probability, self.probability], (len(rows), 1))


def _patient(with_ct: bool) -> PatientFeatures:
    record = ClinicalRecord(patient_id="P1", treatment_start=T0)
    imaging = (
        TimepointFeatures(
            ImagingTimepoint(
                label="baseline",
                study_uid="1.2.3",
                series_uid="1.2.3.4",
                study_date=T0 - dt.timedelta(days=10),
                days_from_treatment_start=-10,
            ),
            radiomics={"original_shape_Sphericity": 0.8},
            unet={"unet000": 1.5, "unet001": 0.0},
        ),
    )
    return PatientFeatures(record, imaging if with_ct else ())


def test_unet_source_vector_and_three_source_ensemble() -> None:
    patient = _patient(with_ct=True)
    assert source_vector(patient, "unet", "baseline") == {
        "baseline.unet000": 1.5,
        "baseline.unet001": 0.0,
    }
    probabilities = {"clinical": 0.2, "radiomics": 0.5, "unet": 0.8}
    schema = {
        "clinical": feature_names("baseline"),
        "radiomics": ["baseline.original_shape_Sphericity"],
        "unet": ["baseline.unet000", "baseline.unet001"],
    }
    models = {
        ModelCatalogue.estimator_name(e, s, "baseline"): ConstantModel(p)
        for e in ENDPOINTS
        for s, p in probabilities.items()
    }
    catalogue = ModelCatalogue(
        endpoints=ENDPOINTS,
        feature_schema={name: schema[name.split("-")[1]] for name in models},
        served={"baseline": ["clinical", "radiomics", "unet"]},
    )
    predictor = Predictor(catalogue, models.__getitem__)
    prediction = predictor.predict(patient, bundle_name="b", bundle_version="1", demonstration=True)
    assert [e.endpoint for e in prediction.endpoints] == list(ENDPOINTS)
    for endpoint in prediction.endpoints:
        assert endpoint.probability == pytest.approx(0.5)
        assert "clinical + radiomics + UNET deep radiomics" in endpoint.model
    unet_rows = models["os12-unet-baseline"].rows[0]
    np.testing.assert_array_equal(unet_rows, [[1.5, 0.0]])
    # Without a usable baseline CT, the clinical model alone serves.
    alone = predictor.predict(
        _patient(with_ct=False), bundle_name="b", bundle_version="1", demonstration=True
    )
    assert all(e.probability == pytest.approx(0.2) for e in alone.endpoints)
