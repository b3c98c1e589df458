"""Reading a patient's resources from a FHIR server or from FHIR NDJSON files.

A :class:`ResourceReader` answers the few questions the clinical source asks
and nothing more; both implementations return plain JSON dicts.  The NDJSON
reader mirrors the server's search semantics for these questions (identifier
token match, subject reference, LOINC code, date range), so both return the
same resources for the same data.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from icibenefit import audit
from icibenefit.errors import ConfigurationError, FhirStatusError
from icibenefit.fhir import codes
from icibenefit.fhir.client import FhirClient

log = logging.getLogger(__name__)

#: LOINC codes of the hemogram and chemistry (absolute and percent differentials).
LAB_LOINC = tuple(sorted(codes.ANALYTE_BY_LOINC))
#: LOINC codes of the history Observations, searched without a date limit.
HISTORY_LOINC = (codes.LOINC_SMOKING_STATUS, codes.LOINC_BMI, *codes.LOINC_PDL1)
_MEDICATION_TYPES = ("MedicationAdministration", "MedicationStatement", "MedicationRequest")
#: Answers to a search that mean "this server will not search that" (bad request for
#: its parameters, forbidden by our scopes, no such type, not implemented) rather than
#: an outage.  401 is not one: failed authentication fails every search, loudly.
CANNOT_SEARCH_STATUSES = frozenset({400, 403, 404, 405, 501})

Resource = dict[str, Any]


class ResourceReader(Protocol):
    """The questions a clinical source asks of a FHIR data store."""

    def patients_by_identifier(self, value: str, system: str | None) -> list[Resource]:
        """Patients with an identifier ``value`` (in ``system`` when given)."""
        ...

    def lab_observations(self, patient: str, start: dt.date, end: dt.date) -> list[Resource]:
        """Hemogram/chemistry Observations of ``patient`` (``Patient/<id>``) dated start..end."""
        ...

    def history_observations(self, patient: str) -> list[Resource]:
        """Smoking status, BMI and PD-L1 Observations of ``patient``, any date."""
        ...

    def for_patient(self, resource_type: str, patient: str) -> list[Resource]:
        """Every resource of a type about ``patient``, with referenced Medications."""
        ...

    def procedures(self, patient: str, end: dt.date) -> list[Resource] | None:
        """Procedures of ``patient`` performed on or before ``end``.

        ``None`` when the store cannot answer for Procedures at all (a server
        that refuses the search): "unknown", which differs from "none
        recorded" (an empty list).
        """
        ...


def escape_search_value(value: str) -> str:
    """Escape the characters FHIR search treats as special: backslash, pipe, comma, dollar."""
    for char in ("\\", "|", ",", "$"):
        value = value.replace(char, "\\" + char)
    return value


def _token(code: str) -> str:
    return f"{codes.LOINC}|{code}"


class ServerReader:
    """Reads through FHIR searches on a server (POSTed, paged)."""

    def __init__(self, client: FhirClient) -> None:
        self.client = client

    def patients_by_identifier(self, value: str, system: str | None) -> list[Resource]:
        """``Patient?identifier=[system|]value``."""
        token = escape_search_value(value)
        identifier = f"{system}|{token}" if system else token
        found = self.client.search("Patient", {"identifier": identifier})
        return [r for r in found if r.get("resourceType") == "Patient"]

    def lab_observations(self, patient: str, start: dt.date, end: dt.date) -> list[Resource]:
        """``Observation?subject=..&code=<labs>&date=ge..&date=le..``."""
        params = {
            "subject": patient,
            "code": ",".join(map(_token, LAB_LOINC)),
            "date": [f"ge{start.isoformat()}", f"le{end.isoformat()}"],
        }
        return self.client.search("Observation", params)

    def history_observations(self, patient: str) -> list[Resource]:
        """``Observation?subject=..&code=<smoking, BMI, PD-L1>``."""
        params = {"subject": patient, "code": ",".join(map(_token, HISTORY_LOINC))}
        return self.client.search("Observation", params)

    def for_patient(self, resource_type: str, patient: str) -> list[Resource]:
        """``<type>?subject=..`` (+ ``_include`` of the Medication for medication types)."""
        params: dict[str, str] = {"subject": patient}
        if resource_type in _MEDICATION_TYPES:
            params["_include"] = f"{resource_type}:medication"
        return self.client.search(resource_type, params)

    def procedures(self, patient: str, end: dt.date) -> list[Resource] | None:
        """``Procedure?subject=..&date=le<end>``; ``None`` when the server refuses the search.

        A refusal (:data:`CANNOT_SEARCH_STATUSES`: the server does not offer
        Procedure or its ``date`` parameter, or our token's scopes exclude it)
        makes previous surgery unknown rather than failing the whole record.
        An outage is not a refusal: the client retries it, and when it lasts
        the error propagates as for every other search.
        """
        params = {"subject": patient, "date": f"le{end.isoformat()}"}
        try:
            return self.client.search("Procedure", params)
        except FhirStatusError as exc:
            if exc.status_code not in CANNOT_SEARCH_STATUSES:
                raise
            log.warning(
                "FHIR server refused the Procedure search (%d); previous surgery stays unknown",
                exc.status_code,
            )
            return None


class NdjsonReader:
    """Reads a folder of FHIR NDJSON (one resource per line, a file per type).

    Accepts the cohort layout ``DIR/fhir/*.ndjson`` or ``DIR/*.ndjson`` itself.
    Everything is read into memory once: the embedded demo's files are small.
    """

    def __init__(self, folder: Path) -> None:
        folder = folder / "fhir" if (folder / "fhir").is_dir() else folder
        files = sorted(folder.glob("*.ndjson"))
        if not files:
            raise ConfigurationError(f"no FHIR NDJSON files in {folder}")
        self._by_type: dict[str, list[Resource]] = defaultdict(list)
        self._by_subject: dict[tuple[str, str], list[Resource]] = defaultdict(list)
        #: Malformed lines skipped while reading (each also logged and audited).
        self.skipped: list[SkippedLine] = []
        for resource in _read_ndjson(files, self.skipped):
            resource_type = str(resource.get("resourceType"))
            self._by_type[resource_type].append(resource)
            subject = _subject(resource)
            if subject is not None:
                self._by_subject[(resource_type, subject)].append(resource)
        self._medications = {
            f"Medication/{m.get('id')}": m for m in self._by_type.get("Medication", [])
        }

    def patients_by_identifier(self, value: str, system: str | None) -> list[Resource]:
        """Token search semantics: exact value, and system when given."""
        return [
            patient
            for patient in self._by_type.get("Patient", [])
            if any(
                i.get("value") == value and (system is None or i.get("system") == system)
                for i in patient.get("identifier") or []
            )
        ]

    def lab_observations(self, patient: str, start: dt.date, end: dt.date) -> list[Resource]:
        """Lab Observations whose effective date falls in start..end."""
        return [
            o
            for o in self._observations(patient, LAB_LOINC)
            if (day := _effective_date(o)) is not None and start <= day <= end
        ]

    def history_observations(self, patient: str) -> list[Resource]:
        """Smoking status, BMI and PD-L1 Observations, any date."""
        return self._observations(patient, HISTORY_LOINC)

    def for_patient(self, resource_type: str, patient: str) -> list[Resource]:
        """Resources of a type by subject, plus the Medications they reference."""
        found = list(self._by_subject.get((resource_type, patient), []))
        if resource_type in _MEDICATION_TYPES:
            references = sorted(
                {str((r.get("medicationReference") or {}).get("reference")) for r in found}
            )
            found += [self._medications[ref] for ref in references if ref in self._medications]
        return found

    def procedures(self, patient: str, end: dt.date) -> list[Resource]:
        """Procedures whose performed date starts on or before ``end``, as a date search would.

        A folder without Procedure NDJSON has none, as a bulk export omits the
        files of types it has no resources of; the answer is then "none", like
        a server's empty search, so both sources agree.
        """
        return [
            p
            for p in self._by_subject.get(("Procedure", patient), [])
            if (day := _performed_first_day(p)) is not None and day <= end
        ]

    def _observations(self, patient: str, loinc: Iterable[str]) -> list[Resource]:
        wanted = set(loinc)
        return [
            o
            for o in self._by_subject.get(("Observation", patient), [])
            if any(
                c.get("system") == codes.LOINC and c.get("code") in wanted
                for c in (o.get("code") or {}).get("coding") or []
            )
        ]


@dataclass(frozen=True)
class SkippedLine:
    """An NDJSON line that held no resource: where, and why (never its content)."""

    file: str
    line: int
    reason: str


def _read_ndjson(files: Iterable[Path], skipped: list[SkippedLine]) -> Iterable[Resource]:
    """Every resource of ``files``; a malformed line is skipped and reported.

    One bad line (not UTF-8, not JSON, not a JSON object) must cost only the
    resources on it, not every patient's job: it is logged and audited with
    its file and line number (its content may hold patient data) and appended
    to ``skipped``.
    """
    for path in files:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    resource = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    _skip(skipped, path, number, "not UTF-8")
                    continue
                except json.JSONDecodeError as exc:
                    _skip(skipped, path, number, f"not JSON ({exc.msg})")
                    continue
                if not isinstance(resource, dict) or "resourceType" not in resource:
                    _skip(skipped, path, number, "not a FHIR resource (JSON object)")
                    continue
                yield resource


def _skip(skipped: list[SkippedLine], path: Path, number: int, reason: str) -> None:
    line = SkippedLine(path.name, number, reason)
    skipped.append(line)
    log.warning("skipped FHIR NDJSON %s line %d: %s", line.file, line.line, reason)
    audit.record(
        "fhir_line_skipped",
        sync=False,
        component="fhir.readers",
        outcome="skipped",
        details={"file": line.file, "line": line.line, "reason": reason},
    )


def _subject(resource: Mapping[str, Any]) -> str | None:
    for field in ("subject", "patient"):
        reference = (resource.get(field) or {}).get("reference")
        if reference:
            return str(reference)
    return None


def _effective_date(observation: Mapping[str, Any]) -> dt.date | None:
    value = observation.get("effectiveDateTime") or observation.get("effectiveInstant")
    value = value or (observation.get("effectivePeriod") or {}).get("start")
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def _performed_first_day(procedure: Mapping[str, Any]) -> dt.date | None:
    """First day of ``performed[x]`` (dateTime or Period start, partial dates included)."""
    value = procedure.get("performedDateTime")
    value = value or (procedure.get("performedPeriod") or {}).get("start")
    if not isinstance(value, str) or len(value) < 4:
        return None
    year, month, day = [*value[:10].split("-"), "01", "01"][:3]
    try:
        return dt.date(int(year), int(month), int(day))
    except ValueError:
        return None
