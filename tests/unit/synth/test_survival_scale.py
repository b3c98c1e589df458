"""The long-survival option: 36-month landmarks estimable, the default cohort untouched."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from icibenefit.cli import app
from icibenefit.synth import (
    DEFAULT_SURVIVAL_SCALE,
    LONG_SURVIVAL_SCALE,
    Outcomes,
    generate_cohort,
    load_manifest,
)
from icibenefit.synth.outcomes import draw_course

N_DRAWS = 400


def _outcomes(**scale: float) -> list[Outcomes]:
    return [
        draw_course(np.random.default_rng([2026, i]), 1.0, **scale).outcomes for i in range(N_DRAWS)
    ]


def _known_event_free(outcomes: list[Outcomes], kind: str, months: float) -> float:
    """Share of patients followed event-free beyond ``months`` (a landmark's class 1)."""
    return float(np.mean([getattr(o, f"{kind}_months") > months for o in outcomes]))


def _dead_by(outcomes: list[Outcomes], months: float) -> float:
    return float(np.mean([o.os_event and o.os_months <= months for o in outcomes]))


def test_long_survival_makes_both_36_month_landmarks_estimable() -> None:
    default, long = _outcomes(), _outcomes(survival_scale=LONG_SURVIVAL_SCALE)
    for kind in ("os", "pfs"):
        assert _known_event_free(default, kind, 36) < 0.05, kind  # the problem it solves
        assert 0.20 <= _known_event_free(long, kind, 36) <= 0.45, kind
        assert _known_event_free(long, kind, 36) > 4 * _known_event_free(default, kind, 36)
    # Non-responders keep dying early, so OS12 still has both classes.
    assert _dead_by(long, 12) >= 0.15
    assert all(o.os_months >= o.pfs_months for o in long)


def test_long_survival_follows_the_same_latent() -> None:
    """Stretching never shortens a patient's survival, and the responders gain most."""
    rngs = [np.random.default_rng([7, i]) for i in range(N_DRAWS)]
    default = [draw_course(rng, 1.0) for rng in rngs]
    rngs = [np.random.default_rng([7, i]) for i in range(N_DRAWS)]
    long = [draw_course(rng, 1.0, LONG_SURVIVAL_SCALE) for rng in rngs]
    latent = np.array([c.latent for c in default])
    assert np.array_equal(latent, [c.latent for c in long])
    observed = [(d, g) for d, g in zip(default, long, strict=True) if d.outcomes.os_event]
    assert all(g.outcomes.os_months >= d.outcomes.os_months for d, g in observed)
    gain = np.array([math.log(g.outcomes.os_months / d.outcomes.os_months) for d, g in observed])
    z = np.array([d.latent for d, _ in observed])
    assert np.corrcoef(z, gain)[0, 1] > 0.5


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_default_cohort_is_unchanged_and_its_manifest_does_not_mention_the_option(
    tmp_path: Path,
) -> None:
    generate_cohort(tmp_path / "omitted", 2, 5)
    generate_cohort(tmp_path / "explicit", 2, 5, survival_scale=DEFAULT_SURVIVAL_SCALE)
    assert _digest(tmp_path / "omitted") == _digest(tmp_path / "explicit")
    raw = json.loads((tmp_path / "omitted" / "manifest.json").read_text())
    assert "survival_scale" not in raw
    assert load_manifest(tmp_path / "omitted").survival_scale is None


def test_cli_records_the_long_survival_scale(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    args = ["synth", "cohort", "--out", str(out), "--patients", "1", "--seed", "4"]
    result = CliRunner().invoke(app, [*args, "--survival-scale", str(LONG_SURVIVAL_SCALE)])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert manifest.survival_scale == LONG_SURVIVAL_SCALE
    assert json.loads((out / "manifest.json").read_text())["survival_scale"] == LONG_SURVIVAL_SCALE
    expected = draw_course(np.random.default_rng([4, 0, 0]), manifest.signal, LONG_SURVIVAL_SCALE)
    assert manifest.patients[0].outcomes == expected.outcomes


@pytest.mark.parametrize("scale", [0.5, float("nan"), float("inf")])
def test_rejects_invalid_survival_scale(tmp_path: Path, scale: float) -> None:
    with pytest.raises(ValueError, match="survival_scale"):
        generate_cohort(tmp_path, 1, 1, survival_scale=scale)
    assert not (tmp_path / "manifest.json").exists()
