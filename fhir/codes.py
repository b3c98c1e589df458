"""Terminology the clinical timeline recognises: LOINC, ATC, RxNorm, SNOMED CT.

Only codes are listed here; the decisions made with them live in
:mod:`icibenefit.fhir.timeline`.  Where hospitals commonly send free text
instead of a code (agent names, histology), a text match is the fallback.
"""

from __future__ import annotations

# The LOINC codes live in the one table of icibenefit.domain (core); they are
# re-exported here so that the FHIR modules find all their terminology in one place.
from icibenefit.domain import LOINC_BMI as LOINC_BMI
from icibenefit.domain import LOINC_BY_ANALYTE, LOINC_SYSTEM, PERCENT_LOINC_BY_ANALYTE, Analyte
from icibenefit.domain import LOINC_PDL1 as LOINC_PDL1
from icibenefit.domain import LOINC_SMOKING_STATUS as LOINC_SMOKING_STATUS

LOINC = LOINC_SYSTEM
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

#: Every LOINC code of a lab result we use -> its analyte.
ANALYTE_BY_LOINC: dict[str, Analyte] = {
    **{code: analyte for analyte, code in LOINC_BY_ANALYTE.items()},
    **{code: analyte for analyte, code in PERCENT_LOINC_BY_ANALYTE.items()},
}

#: Distinguishes the PD-L1 Observation when a site uses a local code.
PDL1_TEXT = ("pd-l1", "pdl1", "pd l1")

#: ATC class of PD-1/PD-L1 inhibitors (since 2022); older ATC codes listed by agent below.
ATC_PD1_PDL1_PREFIX = "L01FF"

#: Agent -> (RxNorm ingredient RxCUI, ATC codes current and pre-2022).
PD1_PDL1_AGENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pembrolizumab": ("1547545", ("L01FF02", "L01XC18")),
    "nivolumab": ("1597876", ("L01FF01", "L01XC17")),
    "atezolizumab": ("1792776", ("L01FF05", "L01XC32")),
    "durvalumab": ("1919503", ("L01FF03", "L01XC28")),
    "avelumab": ("1875534", ("L01FF04", "L01XC31")),
    "cemiplimab": ("2058826", ("L01FF06", "L01XC33")),
}
AGENT_BY_RXNORM = {rxcui: agent for agent, (rxcui, _) in PD1_PDL1_AGENTS.items()}
AGENT_BY_ATC = {atc: agent for agent, (_, atcs) in PD1_PDL1_AGENTS.items() for atc in atcs}

#: SNOMED CT smoking-status answers (the US Core / IPS value set) -> our category.
SMOKING_BY_SNOMED: dict[str, str] = {
    "266919005": "never",  # Never smoked tobacco
    "8517006": "former",  # Ex-smoker
    "77176002": "current",  # Smoker
    "449868002": "current",  # Smokes tobacco daily
    "428041000124106": "current",  # Occasional tobacco smoker
    "428071000124103": "current",  # Heavy tobacco smoker
    "428061000124105": "current",  # Light tobacco smoker
}

#: SNOMED CT lung cancer morphologies -> histology category.
HISTOLOGY_BY_SNOMED: dict[str, str] = {
    "254626006": "adenocarcinoma",  # Adenocarcinoma of lung
    "35917007": "adenocarcinoma",  # Adenocarcinoma (morphology)
    "254634000": "squamous",  # Squamous cell carcinoma of lung
    "28899001": "squamous",  # Squamous cell carcinoma (morphology)
    "254637007": "other",  # Non-small cell lung cancer (no histology given)
    "67101007": "other",  # Large cell carcinoma of lung
}
HISTOLOGY_TEXT = (("adenocarcinoma", "adenocarcinoma"), ("squamous", "squamous"))

#: SNOMED CT "secondary malignant neoplasm of <site>" -> site name.
METASTASIS_SITE_BY_SNOMED: dict[str, str] = {
    "94225005": "brain",
    "94222008": "bone",
    "94381002": "liver",
    "94148006": "adrenal",
    "94391008": "lung",
}
METASTASIS_TEXT = ("metasta", "secondary malignant")

#: SNOMED CT lung resections that make a patient's "previous surgery" true (the
#: paper's clinical variable: thoracic surgery for the cancer before the
#: immunotherapy).  A terminology server could test subsumption under
#: 119746007 |Lung excision|; without one, the common concepts are listed here
#: and the text markers below catch the rest by name.
THORACIC_SURGERY_BY_SNOMED: dict[str, str] = {
    "173171007": "Lobectomy of lung",
    "359615001": "Partial lobectomy of lung",
    "119000": "Thoracoscopic partial lobectomy of lung",
    "49795001": "Total pneumonectomy",
    "173172000": "Excision of segment of lung",
    "173178001": "Open excision of lesion of lung",
    "119746007": "Lung excision",
}
#: Free-text fallback: a procedure whose name says "pneumonectomy" counts, and so
#: does a resection named together with the lung ("thyroid lobectomy" and "liver
#: segmentectomy" do not).
PNEUMONECTOMY_TEXT = "pneumonectomy"
RESECTION_TEXT = ("lobectomy", "segmentectomy", "resection", "excision")
LUNG_TEXT = ("lung", "pulmonary")
#: The one Procedure status (FHIR R4 event-status) that means the surgery took place.
PROCEDURE_DONE_STATUS = "completed"
