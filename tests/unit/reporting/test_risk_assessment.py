import datetime as dt

import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment
from unit.reporting.factories import Case

from icibenefit.domain import ENDPOINTS
from icibenefit.reporting import identity
from icibenefit.reporting.risk_assessment import (
    build_device,
    build_risk_assessment,
    device_identifier,
    patient_reference,
    to_json,
)


@pytest.fixture(scope="module")
def case() -> Case:
    return Case()


def _build(prediction, **kwargs):
    return build_risk_assessment(
        prediction,
        subject=kwargs.get("subject", {"reference": "Patient/p1"}),
        device_reference={"reference": "Device/d1"},
    )


def test_one_prediction_per_endpoint_with_outcome_probability_risk_and_period(case):
    prediction = case.prediction({"pfs6": 0.73, "os12": 0.31})
    ra = to_json(_build(prediction))
    assert ra["status"] == "final"
    items = {item["outcome"]["text"]: item for item in ra["prediction"]}
    assert set(items) == {ENDPOINTS["pfs6"].outcome_text, ENDPOINTS["os12"].outcome_text}
    pfs6 = items["progression-free at 6 months"]
    assert pfs6["probabilityDecimal"] == pytest.approx(0.73)
    # FHIR: likelihood of the outcome (benefit), the inverse of the SR's risk of no benefit
    assert pfs6["qualitativeRisk"]["coding"][0]["code"] == "high"
    assert "(low risk of no durable clinical benefit)" in pfs6["qualitativeRisk"]["text"]
    assert pfs6["whenPeriod"] == {"start": "2024-03-01", "end": "2024-09-01"}
    os12 = items["alive at 12 months"]
    assert os12["qualitativeRisk"]["coding"][0]["code"] == "low"
    assert os12["whenPeriod"]["end"] == "2025-03-01"


def test_references_subject_performer_and_basis(case):
    prediction = case.prediction()
    ra = to_json(_build(prediction))
    assert ra["subject"] == {"reference": "Patient/p1"}
    assert ra["performer"] == {"reference": "Device/d1"}
    observations = [b["reference"] for b in ra["basis"] if "reference" in b]
    assert observations == [f"Observation/{i}" for i in sorted(prediction.lab_observation_ids)]
    studies = [b["identifier"]["value"] for b in ra["basis"] if b.get("type") == "ImagingStudy"]
    assert studies == [f"urn:oid:{tp.study_uid}" for tp in case.timepoints]
    assert ra["occurrenceDateTime"].startswith("2024-06-01T12:00:00")
    assert prediction.bundle_version in ra["method"]["text"]


def test_note_names_top_features_and_demo_notice(case):
    demo = to_json(_build(case.prediction(demonstration=True)))
    real = to_json(_build(case.prediction(demonstration=False)))
    assert "delta_volume (+0.110), nlr_baseline (-0.080)" in demo["note"][0]["text"]
    assert "NOT FOR CLINICAL USE" in demo["note"][0]["text"]
    assert "NOT FOR CLINICAL USE" not in real["note"][0]["text"]


def test_business_identifier_is_stable_across_reruns_but_input_set_is_not(case):
    first = to_json(_build(case.prediction()))
    again = to_json(_build(case.prediction()))
    rerun = to_json(_build(case.prediction(labs=("late-lab",))))
    business = [i for i in first["identifier"] if i["system"] == identity.IDENTIFIER_SYSTEM]
    assert business == [i for i in rerun["identifier"] if i["system"] == identity.IDENTIFIER_SYSTEM]
    assert first == again
    assert first["identifier"] != rerun["identifier"]


def test_output_round_trips_through_the_r4_model(case):
    ra = to_json(_build(case.prediction()))
    assert RiskAssessment.model_validate(ra).status == "final"


def test_patient_reference_by_id_or_identifier():
    assert patient_reference("SYN-1", "abc") == {"reference": "Patient/abc"}
    assert patient_reference("SYN-1", None, "urn:pid") == {
        "type": "Patient",
        "identifier": {"system": "urn:pid", "value": "SYN-1"},
    }


def test_device_carries_model_name_and_version(case):
    prediction = case.prediction()
    device = to_json(build_device(prediction))
    names = {n["type"]: n["name"] for n in device["deviceName"]}
    assert names["model-name"] == prediction.bundle_name
    assert {"type": {"text": "model bundle"}, "value": prediction.bundle_version} in device[
        "version"
    ]
    assert device["identifier"] == [device_identifier(prediction)]
    assert "NOT FOR CLINICAL USE" in device["note"][0]["text"]


def test_naive_creation_time_is_taken_as_utc(case):
    prediction = case.prediction().model_copy(update={"created": dt.datetime(2024, 6, 1, 12)})
    ra = to_json(_build(prediction))
    assert ra["occurrenceDateTime"] in ("2024-06-01T12:00:00Z", "2024-06-01T12:00:00+00:00")
