"""Commands for researchers: ``synth``, ``train``, ``evaluate``."""

from __future__ import annotations

import typer

from icibenefit.cli_common import not_implemented

synth_app = typer.Typer(help="Generate synthetic data.", no_args_is_help=True)


@synth_app.command("cohort")
def synth_cohort(ctx: typer.Context) -> None:
    """Generate a synthetic cohort (DICOM CT + SEG/RTSTRUCT, FHIR NDJSON, outcomes)."""
    not_implemented("synth cohort")


def train(ctx: typer.Context) -> None:
    """Train the models of a recipe on a cohort and write a model bundle."""
    not_implemented("train")


def evaluate(ctx: typer.Context) -> None:
    """Evaluate predictions against outcomes as the paper does."""
    not_implemented("evaluate")
