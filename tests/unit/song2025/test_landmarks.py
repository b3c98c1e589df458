"""Seed 2's landmark endpoints: patients censored before the landmark are excluded."""

from __future__ import annotations

import pytest

from icibenefit.domain import ENDPOINTS
from icibenefit.training.cohort_manifest import Outcomes
from icibenefit.training.dataset import endpoint_label


def _outcomes(pfs: float, pfs_event: bool, os: float, os_event: bool) -> Outcomes:
    return Outcomes(pfs_months=pfs, pfs_event=pfs_event, os_months=os, os_event=os_event)


@pytest.mark.parametrize(
    ("endpoint", "outcomes", "expected"),
    [
        ("os12", _outcomes(3.0, True, 11.9, False), None),  # censored before 12 months
        ("os12", _outcomes(3.0, True, 12.0, False), None),  # censored at the landmark
        ("os12", _outcomes(3.0, True, 11.0, True), 0),  # died before
        ("os12", _outcomes(3.0, True, 12.0, True), 0),  # died at 12: not "beyond"
        ("os12", _outcomes(3.0, True, 12.5, False), 1),  # alive beyond, then censored
        ("os36", _outcomes(3.0, True, 30.0, False), None),
        ("os36", _outcomes(3.0, True, 30.0, True), 0),
        ("os36", _outcomes(3.0, True, 40.0, True), 1),  # died after the landmark
        ("pfs12", _outcomes(8.0, False, 20.0, False), None),
        ("pfs12", _outcomes(8.0, True, 20.0, False), 0),
        ("pfs12", _outcomes(14.0, True, 20.0, True), 1),
        ("pfs36", _outcomes(20.0, False, 40.0, False), None),
        ("pfs36", _outcomes(37.0, False, 40.0, False), 1),
    ],
)
def test_landmark_labels(endpoint: str, outcomes: Outcomes, expected: int | None) -> None:
    assert endpoint_label(outcomes, endpoint) == expected


def test_seed2_endpoints_are_known_landmarks() -> None:
    landmarks = {name: (e.kind, e.landmark_months) for name, e in ENDPOINTS.items()}
    assert landmarks["os12"] == ("os", 12)
    assert landmarks["os36"] == ("os", 36)
    assert landmarks["pfs12"] == ("pfs", 12)
    assert landmarks["pfs36"] == ("pfs", 36)
