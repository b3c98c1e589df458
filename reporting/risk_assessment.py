"""The EHR report: a FHIR R4 RiskAssessment and the Device that produced it.

Resources are built with ``fhir.resources.R4B``.  ``fhir.resources`` 8 defaults
to FHIR R5, whose Device differs from R4 (``name``/``version`` reshaped); the
hospital server speaks R4, and R4B is the package's R4-compatible release: for
RiskAssessment and Device its elements are those of R4, so what validates here
is what an R4 server accepts.

Choices the standard leaves open:

- ``basis`` names the lab Observations by id and the ImagingStudies *by
  identifier* (``urn:dicom:uid`` / ``urn:oid:<Study Instance UID>``), a logical
  reference: many EHRs hold no ImagingStudy for a PACS study, and the identifier
  still lets one that does resolve it, without our creating resources in the
  EHR that are not ours.
- ``identifier`` carries a business identifier stable for one (study, model
  version): the writer updates the resource conditionally on it, so a retry or
  a rerun after late instances replaces the RiskAssessment instead of adding a
  second one.  A second identifier names the input set (the SR's SOP Instance
  UID), linking the EHR entry to the exact DICOM report.
- ``whenPeriod`` runs from the treatment start to the landmark in calendar
  months.
- ``qualitativeRisk`` is, as FHIR defines it, how likely the *outcome* is; the
  outcome is the benefit ("progression-free at 6 months") and
  ``probabilityDecimal`` its probability, so a patient the SR calls "high risk"
  (of no durable benefit) has a *low* likelihood of the outcome here.  The
  code (HL7 risk-probability ``high``/``low``) follows FHIR; the text spells out
  both readings so nobody mistakes one for the other.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from dateutil.relativedelta import relativedelta
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.riskassessment import RiskAssessment

from icibenefit import __version__
from icibenefit.domain import ENDPOINTS, Prediction
from icibenefit.reporting import identity
from icibenefit.reporting.sr import summary_text, top_features_text

RISK_PROBABILITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
ENDPOINT_SYSTEM = "urn:icibenefit:endpoint"
MODEL_SYSTEM = "urn:icibenefit:model"
INPUT_SET_SYSTEM = "urn:icibenefit:input-set"
DICOM_UID_SYSTEM = "urn:dicom:uid"


def patient_reference(
    patient_id: str, fhir_patient_id: str | None = None, identifier_system: str | None = None
) -> dict[str, Any]:
    """Reference the Patient by id when known, else logically by the DICOM PatientID.

    The display is left out on purpose: it would carry the identifier again.
    """
    if fhir_patient_id:
        return {"reference": f"Patient/{fhir_patient_id}"}
    identifier: dict[str, str] = {"value": patient_id}
    if identifier_system:
        identifier["system"] = identifier_system
    return {"type": "Patient", "identifier": identifier}


def device_identifier(prediction: Prediction) -> dict[str, str]:
    """The business identifier of the Device resource of one model version."""
    return {
        "system": identity.DEVICE_IDENTIFIER_SYSTEM,
        "value": f"urn:oid:{identity.device_uid(prediction)}",
    }


def build_device(prediction: Prediction) -> Device:
    """The plugin running one model bundle version, as a FHIR Device."""
    notes = [{"text": identity.DEMONSTRATION_NOTICE}] if prediction.demonstration else None
    return Device.model_validate(
        {
            "resourceType": "Device",
            "identifier": [device_identifier(prediction)],
            "status": "active",
            "manufacturer": identity.MANUFACTURER,
            "deviceName": [
                {"name": prediction.bundle_name, "type": "model-name"},
                {"name": identity.PLUGIN_NAME, "type": "manufacturer-name"},
            ],
            "modelNumber": prediction.bundle_name,
            "type": {"text": "Software: AI prediction of immunotherapy benefit"},
            "version": [
                {"type": {"text": "model bundle"}, "value": prediction.bundle_version},
                {"type": {"text": "software"}, "value": __version__},
            ],
            "note": notes,
        }
    )


def build_risk_assessment(
    prediction: Prediction,
    *,
    subject: Mapping[str, Any],
    device_reference: Mapping[str, Any],
    study_uid: str | None = None,
) -> RiskAssessment:
    """The RiskAssessment of ``prediction``, validated by fhir.resources.

    Parameters
    ----------
    prediction
        What the model said, from which inputs.
    subject
        Reference to the Patient (see :func:`patient_reference`).
    device_reference
        Reference to the Device (by id once written, or by identifier).
    study_uid
        The study reported on, needed only when the prediction used no CT.
    """
    created = prediction.created
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    basis: list[dict[str, Any]] = [
        {"reference": f"Observation/{observation_id}"}
        for observation_id in sorted(prediction.lab_observation_ids)
    ]
    basis += [
        {
            "type": "ImagingStudy",
            "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{tp.study_uid}"},
            "display": f"CT {tp.label} {tp.study_date.isoformat()}",
        }
        for tp in sorted(prediction.imaging, key=lambda t: t.study_date)
    ]
    method_text = (
        f"{prediction.bundle_name} {prediction.bundle_version} "
        f"({prediction.ensemble_kind} ensemble)"
    )
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "identifier": [
            {
                "system": identity.IDENTIFIER_SYSTEM,
                "value": identity.risk_assessment_identifier(prediction, study_uid),
            },
            {
                "system": INPUT_SET_SYSTEM,
                "value": f"urn:oid:{identity.sr_instance_uid(prediction, study_uid)}",
            },
        ],
        "status": "final",
        "subject": dict(subject),
        "occurrenceDateTime": created.isoformat(),
        "code": {
            "coding": [
                {
                    "system": MODEL_SYSTEM,
                    "code": "durable-clinical-benefit",
                    "display": "Durable clinical benefit of anti-PD-1/PD-L1 therapy",
                }
            ],
            "text": "Durable clinical benefit of anti-PD-1/PD-L1 immunotherapy (icibenefit)",
        },
        "method": {
            "coding": [
                {
                    "system": MODEL_SYSTEM,
                    "code": prediction.bundle_name,
                    "version": prediction.bundle_version,
                    "display": method_text,
                }
            ],
            "text": method_text,
        },
        "performer": dict(device_reference),
        "basis": basis or None,
        "prediction": [
            _prediction_item(prediction, index) for index in range(len(prediction.endpoints))
        ],
        "note": [{"text": _note(prediction)}],
    }
    return RiskAssessment.model_validate(resource)


def _prediction_item(prediction: Prediction, index: int) -> dict[str, Any]:
    ep = prediction.endpoints[index]
    endpoint = ENDPOINTS[ep.endpoint]
    months = endpoint.landmark_months
    landmark = prediction.treatment_start + (
        relativedelta(months=int(months))
        if float(months).is_integer()
        else relativedelta(days=round(months * 30.4375))
    )
    likelihood = "low" if ep.risk == "high" else "high"
    rationale = f"{ep.model}; threshold {ep.threshold:.2f}"
    if ep.top_features:
        rationale += "; top contributing features: " + top_features_text(ep)
    return {
        "outcome": {
            "coding": [
                {"system": ENDPOINT_SYSTEM, "code": ep.endpoint, "display": endpoint.outcome_text}
            ],
            "text": endpoint.outcome_text,
        },
        "probabilityDecimal": round(ep.probability, 6),
        "qualitativeRisk": {
            "coding": [
                {
                    "system": RISK_PROBABILITY_SYSTEM,
                    "code": likelihood,
                    "display": f"{likelihood.capitalize()} likelihood",
                }
            ],
            "text": (
                f"{likelihood} likelihood of being {endpoint.outcome_text} "
                f"({ep.risk} risk of no durable clinical benefit)"
            ),
        },
        "whenPeriod": {
            "start": prediction.treatment_start.isoformat(),
            "end": landmark.isoformat(),
        },
        "rationale": rationale,
    }


def _note(prediction: Prediction) -> str:
    """Top features per endpoint, then the readable summary (with the demo notice)."""
    lines = [
        f"Top contributing features for {ep.endpoint.upper()}: {top_features_text(ep)}."
        for ep in prediction.endpoints
        if ep.top_features
    ]
    lines.append(summary_text(prediction))
    return "\n".join(lines)


def to_json(resource: RiskAssessment | Device) -> dict[str, Any]:
    """The resource as FHIR JSON (a dict), without empty elements."""
    return dict(json.loads(resource.model_dump_json(exclude_none=True)))
