"""Who wrote a report and which UIDs and identifiers it carries.

The DICOM SR and the FHIR RiskAssessment describe the same prediction; both
name the plugin and the model the same way and derive their identifiers from
the same key, so that a retry of one job reproduces them exactly (no second,
different SR in the PACS; no duplicate RiskAssessment in the EHR), while a
rerun with a different input set (late instances) gets new ones.
"""

from __future__ import annotations

import hashlib
import json

from pydicom.uid import generate_uid

from icibenefit import __version__
from icibenefit.domain import Prediction
from icibenefit.errors import ReportError

PLUGIN_NAME = "icibenefit"
MANUFACTURER = "icibenefit project"
#: Private coding scheme for the concepts no standard terminology has
#: (probability of durable clinical benefit per endpoint).  PS3.16 8.2 reserves
#: designators starting with "99" for private schemes.
CODING_SCHEME = "99ICIB"
CODING_SCHEME_NAME = "icibenefit concepts"
#: FHIR system of the business identifiers of our RiskAssessments and Devices.
IDENTIFIER_SYSTEM = "urn:icibenefit:prediction"
DEVICE_IDENTIFIER_SYSTEM = "urn:icibenefit:device"
DEMONSTRATION_NOTICE = "DEMONSTRATION MODEL trained on synthetic data - NOT FOR CLINICAL USE."


def software_version(prediction: Prediction) -> str:
    """Plugin and bundle version in one string, as DICOM Software Versions shows it."""
    return (
        f"{PLUGIN_NAME} {__version__}; bundle {prediction.bundle_name} {prediction.bundle_version}"
    )


def report_study_uid(prediction: Prediction, study_uid: str | None = None) -> str:
    """Study of the latest CT used: the report belongs there (STANDARDS.md).

    A prediction without imaging (clinical model only) has no such study; the
    caller then names the study that triggered it.
    """
    if prediction.imaging:
        latest = max(prediction.imaging, key=lambda tp: (tp.study_date, tp.label))
        return latest.study_uid
    if study_uid is None:
        raise ReportError("a prediction without imaging needs the study it reports on")
    return study_uid


def input_set_key(prediction: Prediction) -> str:
    """A stable digest of everything that determined the prediction.

    The creation time is left out on purpose: a retry of the same job must map
    to the same key.  Any change of inputs (a late instance adding an image, a
    new lab result, another segmentation) changes it.
    """
    inputs = {
        "patient": prediction.patient_id,
        "bundle": [prediction.bundle_name, prediction.bundle_version],
        "ensemble": prediction.ensemble_kind,
        "treatment_start": prediction.treatment_start.isoformat(),
        "labs": sorted(prediction.lab_observation_ids),
        "imaging": sorted(
            [
                tp.label,
                tp.study_uid,
                tp.series_uid,
                sorted(tp.image_sop_uids),
                tp.segmentation_sop_uid or "",
                tp.segment_number or 0,
            ]
            for tp in prediction.imaging
        ),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _uid(*parts: str) -> str:
    return str(generate_uid(entropy_srcs=[PLUGIN_NAME, *parts]))


def sr_series_uid(prediction: Prediction, study_uid: str | None = None) -> str:
    """One SR series per (study, bundle version): reruns add instances to it."""
    study = report_study_uid(prediction, study_uid)
    return _uid("sr-series", study, prediction.bundle_name, prediction.bundle_version)


def sr_instance_uid(prediction: Prediction, study_uid: str | None = None) -> str:
    """SOP Instance UID for (study, bundle version, input set)."""
    study = report_study_uid(prediction, study_uid)
    return _uid("sr-instance", study, prediction.bundle_version, input_set_key(prediction))


def pdf_series_uid(prediction: Prediction, study_uid: str | None = None) -> str:
    """One PDF report series per (study, bundle version), like the SR's."""
    study = report_study_uid(prediction, study_uid)
    return _uid("pdf-series", study, prediction.bundle_name, prediction.bundle_version)


def pdf_instance_uid(prediction: Prediction, study_uid: str | None = None) -> str:
    """SOP Instance UID of the PDF report of (study, bundle version, input set)."""
    study = report_study_uid(prediction, study_uid)
    return _uid("pdf-instance", study, prediction.bundle_version, input_set_key(prediction))


def tracking_uid(prediction: Prediction, what: str) -> str:
    """Tracking UID of one finding, stable across reruns so viewers link them.

    ``what`` names the finding: an endpoint name, or ``"tumour:<CT series
    UID>"`` for the tumour as segmented on one CT.  Every timepoint is its own
    tracked finding (see :mod:`icibenefit.reporting.sr` for how the timepoints
    of one lesion are linked); the same finding gets the same UID in every
    report about it.
    """
    return _uid("tracking", prediction.patient_id, prediction.bundle_name, what)


def device_uid(prediction: Prediction) -> str:
    """Device observer UID of the plugin running one model bundle version."""
    return _uid("device", prediction.bundle_name, prediction.bundle_version)


def risk_assessment_identifier(prediction: Prediction, study_uid: str | None = None) -> str:
    """Business identifier of the RiskAssessment of one processed study and model version.

    ``study_uid`` is the study whose run this is (the job's); it defaults to
    the study of the latest CT used.  One RiskAssessment per processed study:
    its reruns (late instances) *update* it instead of adding a second one
    (issue 6: the count stays one), whatever CT the model ended up using; the
    input set of the current run is a second identifier (the SR's UID).
    """
    study = report_study_uid(prediction, study_uid) if study_uid is None else study_uid
    uid = _uid("risk-assessment", study, prediction.bundle_name, prediction.bundle_version)
    return f"urn:oid:{uid}"
