"""UCUM unit normalisation of hemogram and chemistry results.

Laboratories report the same quantity in different units: 10*3/uL, 10*9/L,
/nL and /uL for cell counts; g/dL, g/L and mmol/L for hemoglobin; g/dL and
g/L for albumin; U/L and ukat/L for LDH.  Everything is converted to
:data:`icibenefit.domain.CANONICAL_UNIT` so a model trained in one hospital
reads values from another unchanged.

Written by hand: no maintained Python UCUM library exists on PyPI (checked
``pint``, which cannot parse UCUM codes such as ``10*3/uL`` or annotations
like ``{cells}``), and a table of the handful of units labs use for these
analytes is easier to audit than a general unit algebra.

Hemoglobin in mmol/L: European labs report the iron-binding *monomer*
(molar mass 16.11 kDa, a quarter of the 64.45 kDa tetramer), so
1 mmol/L = 16.11 g/L = **1.611 g/dL**.
"""

from __future__ import annotations

import re
from decimal import Decimal

from icibenefit.domain import CANONICAL_UNIT, Analyte

#: g/dL of hemoglobin per mmol/L (monomer, 16.11 g/mmol); see the module docstring.
HEMOGLOBIN_G_DL_PER_MMOL_L = 1.611
#: U/L of enzyme activity per ukat/L (1 kat = 1 mol/s; 1 U = 1 umol/min).
UNITS_PER_L_PER_UKAT_L = 60.0

_COUNT_ANALYTES = frozenset(
    {
        Analyte.WBC,
        Analyte.NEUTROPHILS,
        Analyte.LYMPHOCYTES,
        Analyte.MONOCYTES,
        Analyte.PLATELETS,
    }
)
#: Differential counts that may come as a percentage of the WBC of the same draw.
DIFFERENTIAL_ANALYTES = frozenset({Analyte.NEUTROPHILS, Analyte.LYMPHOCYTES, Analyte.MONOCYTES})

# Factors to the canonical 10*9/L, keyed by the normalised unit string.
_COUNT_FACTORS = {
    "10*9/l": 1.0,
    "10*3/ul": 1.0,
    "10*3/mm3": 1.0,
    "/nl": 1.0,
    "g/l": 1.0,  # "giga per litre", as French labs write 10*9/L; only for counts
    "k/ul": 1.0,
    "10*6/ml": 1.0,
    "/ul": 1e-3,
    "/mm3": 1e-3,
    "10*6/l": 1e-3,
    "/l": 1e-9,
}
_HEMOGLOBIN_FACTORS = {
    "g/dl": 1.0,
    "g/l": 0.1,
    "mg/dl": 1e-3,
    "mmol/l": HEMOGLOBIN_G_DL_PER_MMOL_L,
}
_ALBUMIN_FACTORS = {"g/dl": 1.0, "g/l": 0.1, "mg/dl": 1e-3}
_LDH_FACTORS = {"u/l": 1.0, "iu/l": 1.0, "[iu]/l": 1.0, "ukat/l": UNITS_PER_L_PER_UKAT_L}

_FACTORS: dict[Analyte, dict[str, float]] = {
    **{analyte: _COUNT_FACTORS for analyte in _COUNT_ANALYTES},
    Analyte.HEMOGLOBIN: _HEMOGLOBIN_FACTORS,
    Analyte.ALBUMIN: _ALBUMIN_FACTORS,
    Analyte.LDH: _LDH_FACTORS,
}


class UnitError(ValueError):
    """A unit that cannot be converted to the analyte's canonical unit."""


def normalise_unit_text(unit: str) -> str:
    """Lower-case, annotation-free, spacing-free spelling used as a table key.

    UCUM annotations in braces (``10*3/uL{cells}``) do not change the unit; the
    common non-UCUM spellings ``10^9/L``, ``x10E3/uL`` and ``µL`` are mapped to
    their UCUM codes.
    """
    text = re.sub(r"\{[^}]*\}", "", unit).strip().lower().replace(" ", "")
    text = text.replace("µ", "u").replace("μ", "u")
    text = re.sub(r"^x?10(?:\^|e|\*\*)", "10*", text)
    return text


def is_percent(unit: str) -> bool:
    """Whether ``unit`` is a percentage (UCUM ``%``)."""
    return normalise_unit_text(unit) in ("%", "percent")


def to_canonical(analyte: Analyte, value: Decimal | float, unit: str) -> float:
    """Convert ``value`` in ``unit`` to the canonical unit of ``analyte``.

    The arithmetic is decimal, so a value reported as ``5230 /uL`` becomes
    exactly ``5.23``, as the laboratory meant it, not ``5.2300000000000004``.

    Raises
    ------
    UnitError
        When the unit is unknown for this analyte (e.g. a percentage, which
        needs the WBC of the same draw: see :func:`percent_to_count`).
    """
    factors = _FACTORS[analyte]
    key = normalise_unit_text(unit)
    if key == normalise_unit_text(CANONICAL_UNIT[analyte]):
        return float(value)
    if key not in factors:
        raise UnitError(f"unit {unit!r} is not convertible to {CANONICAL_UNIT[analyte]}")
    return float(Decimal(str(value)) * Decimal(str(factors[key])))


def percent_to_count(percent: Decimal | float, wbc_canonical: float) -> float:
    """A differential count in 10*9/L from its percentage of the WBC (10*9/L)."""
    return float(Decimal(str(percent)) * Decimal(str(wbc_canonical)) / 100)
