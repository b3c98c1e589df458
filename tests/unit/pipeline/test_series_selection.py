"""Choosing the CT series of a study from headers: axial, soft-tissue kernel, thinnest."""

from __future__ import annotations

import numpy as np
import pytest

from icibenefit.errors import DicomInputError
from icibenefit.pipeline.series_selection import (
    SeriesSelectionRules,
    SeriesSummary,
    choose_ct_series,
    summarize_series,
)
from tests.peers.dicom_objects import CtHeader, ct_series


def _summary(
    kernel: str, thickness: float, *, orientation=None, n=6, description="Thorax"
) -> SeriesSummary:
    series = ct_series(
        np.zeros((n, 4, 4)),
        spacing=(1.0, 1.0, thickness),
        header=CtHeader(kernel=kernel, description=description),
        **({"orientation": orientation} if orientation else {}),
    )
    return summarize_series(series)


def test_series_choice_prefers_axial_soft_tissue_then_thinnest() -> None:
    soft_thick = _summary("B31f", 5.0)
    soft_thin = _summary("B31f", 1.0)
    sharp_thin = _summary("B70f", 0.6)
    coronal = _summary("B31f", 0.5, orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    short = _summary("STANDARD", 0.5, n=3)
    candidates = [soft_thick, sharp_thin, coronal, short, soft_thin]

    choice = choose_ct_series(candidates)
    assert choice.series_uid == soft_thin.series_uid
    text = "\n".join(choice.decisions)
    assert f"series {coronal.series_uid} excluded: not axial" in text
    assert f"series {short.series_uid} excluded: 3 images" in text
    assert f"series {soft_thin.series_uid} chosen" in text
    assert "soft-tissue kernel" in text
    assert f"series {sharp_thin.series_uid} not chosen" in text

    thinnest_first = SeriesSelectionRules(priority=("thickness", "kernel"))
    assert choose_ct_series(candidates, thinnest_first).series_uid == sharp_thin.series_uid


def test_series_choice_fails_clearly_when_nothing_is_usable() -> None:
    coronal = _summary("B31f", 1.0, orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    with pytest.raises(DicomInputError, match="not axial"):
        choose_ct_series([coronal])
    with pytest.raises(ValueError, match="priority"):
        SeriesSelectionRules(priority=("kernel", "kernel"))


@pytest.mark.parametrize(
    ("kernel", "rank"),
    [
        ("B30f", 0),
        ("Br40d", 0),
        ("STANDARD", 0),
        ("FC13", 0),
        ("B70f", 2),
        ("LUNG", 2),
        ("BONEPLUS", 2),
        ("FC51", 2),
        ("XYZ", 1),
    ],
)
def test_kernel_ranks(kernel: str, rank: int) -> None:
    assert SeriesSelectionRules().kernel_rank(_summary(kernel, 1.0)) == rank
