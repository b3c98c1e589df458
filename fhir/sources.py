"""Where clinical records come from: a FHIR server, or a folder of FHIR NDJSON.

Both sources answer the same question through the same protocol,
:class:`ClinicalSource`: "the :class:`~icibenefit.domain.ClinicalRecord` of the
patient with this DICOM PatientID (and IssuerOfPatientID)".  They differ only
in how they read resources (:class:`ResourceReader`); the record itself is
built by the same pure code (:mod:`icibenefit.fhir.timeline`), so both give
identical records for the same data.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.resource import Resource

from icibenefit import audit
from icibenefit.domain import ClinicalRecord
from icibenefit.errors import ConfigurationError, PatientResolutionError, TimelineError
from icibenefit.fhir.client import FhirClient
from icibenefit.fhir.readers import NdjsonReader, ResourceReader, ServerReader
from icibenefit.fhir.surgery import PROCEDURE_FETCH_DAYS_AFTER_T0
from icibenefit.fhir.timeline import LAB_FETCH_DAYS, build_clinical_record, parse
from icibenefit.fhir.treatment import SOURCE_ORDER, TreatmentStart, find_treatment_start
from icibenefit.privacy import pseudonymize
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

_MEDICATION_MODELS: dict[str, type[Resource]] = {
    "MedicationAdministration": MedicationAdministration,
    "MedicationStatement": MedicationStatement,
    "MedicationRequest": MedicationRequest,
}


@runtime_checkable
class ClinicalSource(Protocol):
    """Anything that can produce a patient's clinical record."""

    def clinical_record(self, patient_id: str, issuer: str | None = None) -> ClinicalRecord:
        """The record of the patient with DICOM PatientID ``patient_id``.

        Raises
        ------
        PatientResolutionError
            No FHIR Patient has the identifier, or several do.
        TimelineError
            The treatment start is known neither to the EHR nor to the configuration.
        FhirError
            The server failed after retries.
        """
        ...


class ReaderClinicalSource:
    """A :class:`ClinicalSource` over any :class:`ResourceReader`.

    Parameters
    ----------
    reader
        Reads the resources (server or NDJSON).
    identifier_system
        Identifier system of the DICOM PatientID in FHIR; ``None`` matches any system.
    pseudonym_key
        Site key for the pseudonyms that stand for patients in logs and errors.
    treatment_starts
        T0 by DICOM PatientID, used when the EHR has no PD-1/PD-L1 medication
        (from ``treatment_start_file`` or a cohort file).
    """

    def __init__(
        self,
        reader: ResourceReader,
        *,
        identifier_system: str | None = None,
        pseudonym_key: str,
        treatment_starts: Mapping[str, dt.date] | None = None,
    ) -> None:
        self.reader = reader
        self.identifier_system = identifier_system
        self._key = pseudonym_key
        self._treatment_starts = dict(treatment_starts or {})

    def clinical_record(self, patient_id: str, issuer: str | None = None) -> ClinicalRecord:
        """The record of one patient (see :meth:`ClinicalSource.clinical_record`)."""
        pseudonym = pseudonymize(patient_id, self._key)
        patient = self.resolve_patient(patient_id, issuer)
        reference = f"Patient/{patient['id']}"
        treatment = self._treatment_start(reference, patient_id, pseudonym)
        start = treatment.date + dt.timedelta(days=LAB_FETCH_DAYS[0])
        end = treatment.date + dt.timedelta(days=LAB_FETCH_DAYS[1])
        observations = self.reader.lab_observations(reference, start, end)
        observations += self.reader.history_observations(reference)
        conditions = self.reader.for_patient("Condition", reference)
        procedures = self.reader.procedures(
            reference, treatment.date + dt.timedelta(days=PROCEDURE_FETCH_DAYS_AFTER_T0)
        )
        record = build_clinical_record(
            patient_id, patient, treatment, observations, conditions, procedures
        )
        audit.record(
            "fetched",
            component="fhir",
            patient_id=patient_id,
            details={
                "source": type(self.reader).__name__,
                "observations": len(observations),
                "treatment_start_from": treatment.source,
            },
        )
        log.info(
            "clinical record of %s: T0 from %s, lab timepoints %s, previous surgery %s",
            pseudonym,
            treatment.source,
            ",".join(sorted(record.labs)) or "none",
            "unknown" if record.previous_surgery is None else record.previous_surgery,
        )
        return record

    def resolve_patient(self, patient_id: str, issuer: str | None = None) -> dict[str, Any]:
        """The one FHIR Patient whose identifier is the DICOM PatientID.

        The identifier system is the configured one; without it, an issuer that
        is a URI (``urn:oid:...``, ``http...``) serves as the system.  When several
        Patients match, the issuer (identifier system, or assigner display or
        identifier) narrows them down; an issuer FHIR does not record is not
        held against a single match.
        """
        pseudonym = pseudonymize(patient_id, self._key)
        system = self.identifier_system
        if system is None and issuer and ":" in issuer:
            system = issuer
        candidates = self.reader.patients_by_identifier(patient_id, system)
        if issuer and len(candidates) > 1:
            issued = [p for p in candidates if _issued_by(p, patient_id, issuer)]
            candidates = issued or candidates
        if not candidates:
            raise PatientResolutionError(f"no FHIR Patient has the identifier of {pseudonym}")
        if len(candidates) > 1:
            raise PatientResolutionError(
                f"{len(candidates)} FHIR Patients share the identifier of {pseudonym}; set "
                "fhir_patient_identifier_system or send IssuerOfPatientID"
            )
        return candidates[0]

    def _treatment_start(self, reference: str, patient_id: str, pseudonym: str) -> TreatmentStart:
        for kind in SOURCE_ORDER:
            resources = self.reader.for_patient(kind, reference)
            medications = {
                f"Medication/{m.id}": m for m in parse(resources, Medication) if m.id is not None
            }
            found = find_treatment_start(parse(resources, _MEDICATION_MODELS[kind]), medications)
            if found is not None:
                return found
        if patient_id in self._treatment_starts:
            return TreatmentStart(self._treatment_starts[patient_id], None, "file")
        raise TimelineError(
            f"no treatment start for {pseudonym}: no PD-1/PD-L1 medication in FHIR and "
            "none in treatment_start_file"
        )


def _issued_by(patient: Mapping[str, Any], value: str, issuer: str) -> bool:
    for identifier in patient.get("identifier") or []:
        if identifier.get("value") != value:
            continue
        assigner = identifier.get("assigner") or {}
        names = {
            identifier.get("system"),
            assigner.get("display"),
            (assigner.get("identifier") or {}).get("value"),
        }
        if issuer in names or f"urn:oid:{issuer}" in names:
            return True
    return False


def load_treatment_starts(path: Path) -> dict[str, dt.date]:
    """T0 by patient from a CSV with columns ``patient_id`` and ``treatment_start`` (ISO date).

    Other columns are ignored, so the cohort's ``clinical.csv`` works as is.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigurationError(f"cannot read treatment_start_file: {exc}") from None
    starts = {}
    for number, row in enumerate(rows, start=2):
        try:
            starts[row["patient_id"].strip()] = dt.date.fromisoformat(
                row["treatment_start"].strip()
            )
        except (KeyError, AttributeError, ValueError):
            raise ConfigurationError(
                f"treatment_start_file line {number}: need patient_id and an ISO treatment_start"
            ) from None
    return starts


def clinical_source_from_settings(
    settings: Settings, client: FhirClient | None = None
) -> ReaderClinicalSource:
    """The source the settings describe: FHIR server, else the NDJSON folder.

    The server is used when ``fhir_base_url`` is set (or a client is given),
    otherwise the folder ``fhir_ndjson_dir``.

    Parameters
    ----------
    settings
        The service settings.
    client
        An existing client to reuse (tests pass one with a mock transport).
    """
    reader: ResourceReader
    if settings.fhir_base_url is not None or client is not None:
        reader = ServerReader(client or FhirClient.from_settings(settings))
    elif settings.fhir_ndjson_dir is not None:
        reader = NdjsonReader(settings.fhir_ndjson_dir)
    else:
        raise ConfigurationError("set fhir_base_url (FHIR server) or fhir_ndjson_dir (NDJSON)")
    starts = (
        load_treatment_starts(settings.treatment_start_file)
        if settings.treatment_start_file is not None
        else {}
    )
    return ReaderClinicalSource(
        reader,
        identifier_system=settings.fhir_patient_identifier_system,
        pseudonym_key=settings.pseudonym_key.get_secret_value(),
        treatment_starts=starts,
    )
