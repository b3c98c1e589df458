from decimal import Decimal

import pytest

from icibenefit.domain import Analyte
from icibenefit.fhir.units import (
    HEMOGLOBIN_G_DL_PER_MMOL_L,
    UnitError,
    is_percent,
    percent_to_count,
    to_canonical,
)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (5.23, "10*9/L", 5.23),
        (5.23, "10*3/uL", 5.23),
        (Decimal("5230"), "/uL", 5.23),  # exact decimal arithmetic, no 5.2300000000000004
        (5.23, "10^9/L", 5.23),
        (5.23, "x10E3/µL", 5.23),
        (5.23, "10*3/uL{cells}", 5.23),
        (5.23, "/nL", 5.23),
        (5230000000, "/L", 5.23),
    ],
)
def test_cell_counts_normalise_to_giga_per_litre(value, unit, expected):
    assert to_canonical(Analyte.WBC, value, unit) == expected


def test_hemoglobin_units():
    assert to_canonical(Analyte.HEMOGLOBIN, Decimal("126"), "g/L") == 12.6
    assert to_canonical(Analyte.HEMOGLOBIN, 12.6, "g/dL") == 12.6
    # monomer molar mass 16.11 g/mmol -> 1.611 g/dL per mmol/L
    assert pytest.approx(16.11 / 10) == HEMOGLOBIN_G_DL_PER_MMOL_L
    assert to_canonical(Analyte.HEMOGLOBIN, 8.0, "mmol/L") == pytest.approx(12.888)


def test_albumin_and_ldh_units():
    assert to_canonical(Analyte.ALBUMIN, Decimal("38"), "g/L") == 3.8
    assert to_canonical(Analyte.LDH, 3.5, "ukat/L") == pytest.approx(210.0)
    assert to_canonical(Analyte.LDH, 210, "U/L") == 210.0


@pytest.mark.parametrize(
    ("analyte", "unit"),
    [(Analyte.WBC, "mg/dL"), (Analyte.HEMOGLOBIN, "10*9/L"), (Analyte.NEUTROPHILS, "%")],
)
def test_unconvertible_units_raise(analyte, unit):
    with pytest.raises(UnitError):
        to_canonical(analyte, 1.0, unit)


def test_percent_differential_uses_the_wbc():
    assert is_percent("%")
    assert not is_percent("10*9/L")
    assert percent_to_count(Decimal("70"), 8.0) == 5.6
