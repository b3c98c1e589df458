"""Previous surgery: whether the patient had lung surgery before the immunotherapy.

The paper's clinical variable "previous surgery" (seed 1, Table 1: 14% of the
cohort) is a resection of the lung cancer before treatment start; its
exclusion criteria drop patients resected *during* treatment.  Decided here,
without I/O, from the patient's FHIR ``Procedure`` resources:

* only ``status = completed`` counts (not ``in-progress``, ``not-done``,
  ``stopped``, ``entered-in-error``...);
* the procedure is a lung resection: a SNOMED CT code of
  :data:`~icibenefit.fhir.codes.THORACIC_SURGERY_BY_SNOMED`, or, without one
  of those codes, a name that says so (see the text markers in
  :mod:`~icibenefit.fhir.codes`);
* it was performed before T0: its start (``performedDateTime`` or
  ``performedPeriod.start``, on the calendar date the hospital recorded) is a
  day before T0 at the latest.  A partial date counts when the whole month or
  year it names lies before T0 ("2015" for a 2020 T0); a procedure with no
  usable date cannot be placed and does not count.

The answer is ``True`` or ``False``; "unknown" (``None``) is the sources'
call, made when the Procedures could not be looked up at all.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable
from typing import Any

from fhir.resources.R4B.procedure import Procedure

from icibenefit.fhir import codes
from icibenefit.fhir.concepts import coded, concept_text

#: Days after T0 a source fetches Procedures for: one day of slack for time
#: zones, as for the labs; the decision itself is made on recorded dates.
PROCEDURE_FETCH_DAYS_AFTER_T0 = 1


def performed_last_day(procedure: Procedure) -> dt.date | None:
    """The latest calendar day the procedure can have started on; ``None`` when undated."""
    value: Any = procedure.performedDateTime
    if value is None and procedure.performedPeriod is not None:
        value = procedure.performedPeriod.start
    if isinstance(value, dt.datetime | dt.date):
        return value.date() if isinstance(value, dt.datetime) else value
    if isinstance(value, str):  # a partial date: "YYYY" or "YYYY-MM"
        parts = value.split("-")
        try:
            year = int(parts[0])
            month = int(parts[1]) if len(parts) > 1 else 12
            return dt.date(year, month, calendar.monthrange(year, month)[1])
        except (ValueError, IndexError):
            return None
    return None


def is_lung_resection(procedure: Procedure) -> bool:
    """Whether the procedure's code (or, failing a known code, its name) is a lung resection."""
    if set(coded(procedure.code, codes.SNOMED)) & set(codes.THORACIC_SURGERY_BY_SNOMED):
        return True
    text = concept_text(procedure.code)
    if codes.PNEUMONECTOMY_TEXT in text:
        return True
    return any(word in text for word in codes.RESECTION_TEXT) and any(
        word in text for word in codes.LUNG_TEXT
    )


def previous_surgery(procedures: Iterable[Procedure], t0: dt.date) -> bool:
    """Whether any completed lung resection was performed before ``t0`` (see the module doc)."""
    for procedure in procedures:
        if procedure.status != codes.PROCEDURE_DONE_STATUS or not is_lung_resection(procedure):
            continue
        last_day = performed_last_day(procedure)
        if last_day is not None and last_day < t0:
            return True
    return False
