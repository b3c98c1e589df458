"""Domain types shared by the parts of icibenefit.

These are the contracts between the packages: ``fhir`` produces a
:class:`ClinicalRecord`, ``pipeline`` turns records and images into a
:class:`Prediction`, ``reporting`` renders predictions as DICOM SR and FHIR
RiskAssessment.  They are immutable pydantic models so that they can be
cached, compared for equality in tests and written as JSON for provenance.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Immutable, strict-by-default base for all domain records."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------
# Endpoints


class Endpoint(Frozen):
    """A landmark endpoint: responder = event-free beyond ``landmark_months``.

    Patients censored before the landmark have unknown status and are excluded
    from that endpoint (METHOD.md).
    """

    name: str
    kind: Literal["pfs", "os"]
    landmark_months: float

    @property
    def outcome_text(self) -> str:
        """The human-readable outcome used in reports (e.g. "progression-free at 6 months")."""
        state = "progression-free" if self.kind == "pfs" else "alive"
        return f"{state} at {self.landmark_months:g} months"


ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint(name="pfs6", kind="pfs", landmark_months=6),
        Endpoint(name="pfs9", kind="pfs", landmark_months=9),
        Endpoint(name="pfs12", kind="pfs", landmark_months=12),
        Endpoint(name="pfs36", kind="pfs", landmark_months=36),
        Endpoint(name="os12", kind="os", landmark_months=12),
        Endpoint(name="os36", kind="os", landmark_months=36),
    )
}


# --------------------------------------------------------------------------
# Clinical data


class LabTimepoint(StrEnum):
    """Clinical timepoints of the hemogram (METHOD.md, "Clinical timepoints")."""

    BASELINE = "baseline"
    CYCLE2 = "cycle2"
    CYCLE3 = "cycle3"


class Analyte(StrEnum):
    """Hemogram and chemistry analytes the model uses."""

    WBC = "wbc"
    NEUTROPHILS = "neutrophils"
    LYMPHOCYTES = "lymphocytes"
    MONOCYTES = "monocytes"
    PLATELETS = "platelets"
    HEMOGLOBIN = "hemoglobin"
    ALBUMIN = "albumin"
    LDH = "ldh"


# The one LOINC table of the project: the FHIR client derives its code -> analyte
# lookup from it (icibenefit.fhir.codes) and the synthetic cohort writes it.

#: Code system URI of LOINC.
LOINC_SYSTEM = "http://loinc.org"

#: LOINC code of each analyte as the model uses it (absolute counts, concentrations).
LOINC_BY_ANALYTE: dict[Analyte, str] = {
    Analyte.WBC: "6690-2",
    Analyte.NEUTROPHILS: "751-8",
    Analyte.LYMPHOCYTES: "731-0",
    Analyte.MONOCYTES: "742-7",
    Analyte.PLATELETS: "777-3",
    Analyte.HEMOGLOBIN: "718-7",
    Analyte.ALBUMIN: "1751-7",
    Analyte.LDH: "2532-0",
}

#: LOINC codes of differential counts reported as a percentage of the WBC.
PERCENT_LOINC_BY_ANALYTE: dict[Analyte, str] = {
    Analyte.NEUTROPHILS: "770-8",
    Analyte.LYMPHOCYTES: "736-9",
    Analyte.MONOCYTES: "5905-5",
}

LOINC_SMOKING_STATUS = "72166-2"
LOINC_BMI = "39156-5"
#: PD-L1 by immune stain, tumour proportion score (22C3 and SP263 kits report the TPS).
LOINC_PDL1 = ("85147-7", "83052-1", "85319-2")

#: Canonical UCUM unit each analyte is normalised to.
CANONICAL_UNIT: dict[Analyte, str] = {
    Analyte.WBC: "10*9/L",
    Analyte.NEUTROPHILS: "10*9/L",
    Analyte.LYMPHOCYTES: "10*9/L",
    Analyte.MONOCYTES: "10*9/L",
    Analyte.PLATELETS: "10*9/L",
    Analyte.HEMOGLOBIN: "g/dL",
    Analyte.ALBUMIN: "g/dL",
    Analyte.LDH: "U/L",
}


class LabValue(Frozen):
    """One lab result in its canonical unit, with the Observation it came from."""

    analyte: Analyte
    value: float
    unit: str
    effective: dt.datetime
    observation_id: str = Field(description="FHIR Observation id, for provenance.")


class LabPanel(Frozen):
    """The hemogram of one clinical timepoint; a missing analyte is simply absent."""

    timepoint: LabTimepoint
    values: dict[Analyte, LabValue] = Field(default_factory=dict)

    def get(self, analyte: Analyte) -> float | None:
        """Return the value of ``analyte`` or ``None`` when it was not measured."""
        lab = self.values.get(analyte)
        return None if lab is None else lab.value

    @property
    def nlr(self) -> float | None:
        """Neutrophil-to-lymphocyte ratio."""
        return _ratio(self.get(Analyte.NEUTROPHILS), self.get(Analyte.LYMPHOCYTES))

    @property
    def plr(self) -> float | None:
        """Platelet-to-lymphocyte ratio."""
        return _ratio(self.get(Analyte.PLATELETS), self.get(Analyte.LYMPHOCYTES))

    @property
    def sii(self) -> float | None:
        """Systemic immune-inflammation index = platelets x neutrophils / lymphocytes."""
        platelets, nlr = self.get(Analyte.PLATELETS), self.nlr
        return None if platelets is None or nlr is None else platelets * nlr

    @property
    def dnlr(self) -> float | None:
        """Derived NLR = neutrophils / (WBC - neutrophils)."""
        wbc, neutrophils = self.get(Analyte.WBC), self.get(Analyte.NEUTROPHILS)
        if wbc is None or neutrophils is None:
            return None
        return _ratio(neutrophils, wbc - neutrophils)

    @property
    def source_observation_ids(self) -> list[str]:
        """Ids of every Observation this panel was built from."""
        return sorted(lab.observation_id for lab in self.values.values())


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


class ClinicalRecord(Frozen):
    """A patient's clinical timeline as the model needs it; pure data, no I/O.

    ``patient_id`` is the DICOM PatientID (clear text: never log it, use
    :func:`icibenefit.privacy.pseudonymize`).  Every optional field is ``None``
    when the source did not have it; imputation is the model's job, not ours.
    """

    patient_id: str
    fhir_patient_id: str | None = None
    sex: Literal["male", "female", "other", "unknown"] = "unknown"
    birth_date: dt.date | None = None
    treatment_start: dt.date
    treatment_agent: str | None = None
    treatment_source: str = Field(
        "unknown", description="Where T0 came from: MedicationAdministration, settings, file..."
    )
    histology: str | None = Field(None, description="adenocarcinoma, squamous, other")
    smoking_status: Literal["never", "former", "current"] | None = None
    bmi: float | None = None
    pdl1_tps: float | None = Field(None, description="PD-L1 tumour proportion score, percent.")
    previous_surgery: bool | None = None
    metastasis_sites: tuple[str, ...] = ()
    labs: dict[LabTimepoint, LabPanel] = Field(default_factory=dict)

    @property
    def age_at_treatment_start(self) -> float | None:
        """Age in years on the day treatment started."""
        if self.birth_date is None:
            return None
        return (self.treatment_start - self.birth_date).days / 365.25

    def panel(self, timepoint: LabTimepoint) -> LabPanel:
        """Return the panel of ``timepoint`` (empty when nothing was measured)."""
        return self.labs.get(timepoint, LabPanel(timepoint=timepoint))


# --------------------------------------------------------------------------
# Predictions


class ImagingTimepoint(Frozen):
    """One CT timepoint that fed the model, with the exact inputs used."""

    label: Literal["baseline", "followup1", "followup2"]
    study_uid: str
    series_uid: str
    study_date: dt.date
    days_from_treatment_start: int
    image_sop_uids: tuple[str, ...] = ()
    segmentation_sop_uid: str | None = None
    segmentation_sop_class_uid: str | None = None
    segment_number: int | None = None


class FeatureContribution(Frozen):
    """A feature and how much it pushed the prediction (SHAP value or importance)."""

    name: str
    value: float | None
    contribution: float


class EndpointPrediction(Frozen):
    """The model's answer for one endpoint.

    ``probability`` is the probability of durable clinical benefit, i.e. of being
    event-free at the landmark.  ``risk`` is the risk of *not* benefiting:
    ``"high"`` when the probability is below the threshold (0.5), else ``"low"``.
    """

    endpoint: str
    probability: float = Field(ge=0.0, le=1.0)
    risk: Literal["high", "low"]
    model: str = Field(description="Model used, e.g. 'longitudinal ensemble (clinical + DF-imm)'.")
    threshold: float = 0.5
    top_features: tuple[FeatureContribution, ...] = ()


class Prediction(Frozen):
    """Everything a report needs to state what was predicted, how, and from what."""

    patient_id: str
    bundle_name: str
    bundle_version: str
    demonstration: bool = Field(description="Trained on synthetic data: not for clinical use.")
    ensemble_kind: Literal["baseline", "delta", "longitudinal"]
    treatment_start: dt.date
    imaging: tuple[ImagingTimepoint, ...]
    lab_observation_ids: tuple[str, ...] = ()
    endpoints: tuple[EndpointPrediction, ...]
    decisions: tuple[str, ...] = Field(
        (), description="Why these inputs: series chosen or dropped, imputations made."
    )
    created: dt.datetime
