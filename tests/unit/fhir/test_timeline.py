import datetime as dt

import pytest
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from unit.fhir import fhir_samples as s

from icibenefit.domain import Analyte, LabTimepoint
from icibenefit.fhir.timeline import build_clinical_record, diagnoses, parse
from icibenefit.fhir.treatment import TreatmentStart, find_treatment_start

TREATMENT = TreatmentStart(s.T0, "pembrolizumab", "MedicationAdministration")


def record(resources):
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    conditions = [r for r in resources if r["resourceType"] == "Condition"]
    return build_clinical_record("PID-0001", patient, TREATMENT, observations, conditions)


def test_baseline_is_the_draw_closest_to_t0_within_30_days():
    rec = record(s.sample_patient())
    baseline = rec.panel(LabTimepoint.BASELINE)
    assert baseline.values[Analyte.WBC].observation_id == "pat-a-b2-wbc"  # day -3 beats -10 and -40
    assert baseline.get(Analyte.WBC) == 6.5  # 6500 /uL
    assert baseline.get(Analyte.NEUTROPHILS) == 4.25
    assert baseline.get(Analyte.HEMOGLOBIN) == pytest.approx(7.8 * 1.611)
    assert baseline.get(Analyte.ALBUMIN) == 3.8
    assert baseline.get(Analyte.LDH) == pytest.approx(210.0)
    assert baseline.nlr == pytest.approx(4.25 / 1.3)
    assert baseline.sii == pytest.approx(245 * 4.25 / 1.3)


def test_percent_differentials_and_missing_values():
    rec = record(s.sample_patient())
    cycle2 = rec.panel(LabTimepoint.CYCLE2)
    assert cycle2.get(Analyte.NEUTROPHILS) == 5.6  # 70 % of 8.0
    assert cycle2.get(Analyte.LYMPHOCYTES) == 1.6
    assert cycle2.get(Analyte.PLATELETS) is None  # only an entered-in-error value
    assert cycle2.sii is None
    assert cycle2.get(Analyte.MONOCYTES) is None
    assert LabTimepoint.CYCLE3 not in rec.labs
    assert rec.panel(LabTimepoint.CYCLE3).values == {}


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (-31, None),
        (-30, LabTimepoint.BASELINE),
        (0, LabTimepoint.BASELINE),
        (1, None),
        (13, None),
        (14, LabTimepoint.CYCLE2),
        (28, LabTimepoint.CYCLE2),
        (29, None),
        (34, None),
        (35, LabTimepoint.CYCLE3),
        (49, LabTimepoint.CYCLE3),
        (50, None),
    ],
)
def test_window_edges(day, expected):
    resources = [s.patient("p", "X"), s.observation("o", "p", s.WBC, 5.0, "10*9/L", s.at(day, 23))]
    rec = record(resources)
    assert list(rec.labs) == ([] if expected is None else [expected])


def test_the_draw_closest_to_the_cycle_target_wins():
    resources = [
        s.patient("p", "X"),
        s.observation("early", "p", s.WBC, 5.0, "10*9/L", s.at(15)),
        s.observation("close", "p", s.WBC, 6.0, "10*9/L", s.at(20)),
        s.observation("late", "p", s.WBC, 7.0, "10*9/L", s.at(27)),
    ]
    assert (
        record(resources).panel(LabTimepoint.CYCLE2).values[Analyte.WBC].observation_id == "close"
    )


def test_demographics_and_history():
    resources = [
        s.patient("p", "X", gender="male", birthDate="1950"),  # partial date: unknown
        {
            "resourceType": "Observation",
            "id": "smk",
            "status": "final",
            "code": {"coding": [{"system": s.LOINC, "code": "72166-2"}]},
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2023-01-01",
            "valueCodeableConcept": {
                "coding": [{"system": "http://snomed.info/sct", "code": "8517006"}]
            },
        },
        {
            "resourceType": "Observation",
            "id": "bmi-old",
            "status": "final",
            "code": {"coding": [{"system": s.LOINC, "code": "39156-5"}]},
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2022-01-01",
            "valueQuantity": {"value": 30.0, "unit": "kg/m2"},
        },
        {
            "resourceType": "Observation",
            "id": "bmi",
            "status": "final",
            "code": {"coding": [{"system": s.LOINC, "code": "39156-5"}]},
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2024-02-01",
            "valueQuantity": {"value": 24.5, "unit": "kg/m2"},
        },
        {
            "resourceType": "Observation",
            "id": "pdl1",
            "status": "final",
            "code": {"text": "PD-L1 TPS (22C3)"},
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2024-01-15",
            "valueQuantity": {"value": 60, "unit": "%"},
        },
    ]
    rec = record(resources)
    assert rec.sex == "male"
    assert rec.birth_date is None
    assert rec.smoking_status == "former"
    assert rec.bmi == 24.5
    assert rec.pdl1_tps == 60.0


def condition(code, display):
    return Condition.model_validate(
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/p"},
            "code": {
                "coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]
            },
        }
    )


def test_diagnoses_histology_and_metastasis_sites():
    found = diagnoses(
        [
            condition("254626006", "Adenocarcinoma of lung"),
            condition("94225005", "Secondary malignant neoplasm of brain"),
            condition("94381002", "Secondary malignant neoplasm of liver"),
        ]
    )
    assert found == {"histology": "adenocarcinoma", "metastasis_sites": ("brain", "liver")}
    assert diagnoses([])["histology"] is None


def med(kind, when, coding, status="completed", **extra):
    body = {
        "resourceType": kind,
        "status": status,
        "subject": {"reference": "Patient/p"},
        "medicationCodeableConcept": {"coding": [coding]},
        **extra,
    }
    if kind == "MedicationRequest":
        body |= {"intent": "order", "authoredOn": when}
    else:
        body["effectiveDateTime"] = when
    model = {
        "MedicationAdministration": MedicationAdministration,
        "MedicationStatement": MedicationStatement,
        "MedicationRequest": MedicationRequest,
    }[kind]
    return model.model_validate(body)


ATC = "http://www.whocc.no/atc"


def test_treatment_start_prefers_administrations_and_ignores_other_drugs():
    resources = [
        med("MedicationRequest", "2024-02-20", {"system": ATC, "code": "L01FF01"}, status="active"),
        med(
            "MedicationAdministration",
            "2024-03-05T09:00:00+01:00",
            {"system": ATC, "code": "L01FF01"},
        ),
        med(
            "MedicationAdministration",
            "2024-03-26T09:00:00+01:00",
            {"system": ATC, "code": "L01FF01"},
        ),
        med(
            "MedicationAdministration",
            "2024-01-05T09:00:00+01:00",
            {"system": ATC, "code": "L01BA04"},
        ),  # pemetrexed
    ]
    assert find_treatment_start(resources) == TreatmentStart(
        dt.date(2024, 3, 5), "nivolumab", "MedicationAdministration"
    )


def test_treatment_start_falls_back_to_statements_then_requests():
    request = med(
        "MedicationRequest", "2024-02-20", {"system": ATC, "code": "L01FF05"}, status="active"
    )
    statement = med(
        "MedicationStatement", "2024-02-25", {"system": ATC, "code": "L01FF03"}, status="active"
    )
    assert find_treatment_start([request]) == TreatmentStart(
        dt.date(2024, 2, 20), "atezolizumab", "MedicationRequest"
    )
    assert find_treatment_start([request, statement]).source == "MedicationStatement"
    unknown = med("MedicationAdministration", "2024-02-01", {"system": ATC, "code": "L01FF99"})
    assert find_treatment_start([unknown]) == TreatmentStart(
        dt.date(2024, 2, 1), None, "MedicationAdministration"
    )
    text_only = MedicationAdministration.model_validate(
        {
            "resourceType": "MedicationAdministration",
            "status": "completed",
            "subject": {"reference": "Patient/p"},
            "medicationCodeableConcept": {"text": "Keytruda (Pembrolizumab) 200 mg"},
            "effectiveDateTime": "2024-02-02",
        }
    )
    assert find_treatment_start([text_only]).agent == "pembrolizumab"
    assert find_treatment_start([]) is None


def test_parse_skips_invalid_resources(caplog):
    valid = s.observation("o", "p", s.WBC, 5.0, "10*9/L", s.at(0))
    invalid = {**valid, "id": "bad", "status": 7, "bogus": True}
    assert [o.id for o in parse([valid, invalid], s_observation_model())] == ["o"]
    assert "skipped 1 invalid Observation" in caplog.text


def s_observation_model():
    from fhir.resources.R4B.observation import Observation

    return Observation
