"""The ``synth`` command group: synthetic data for tests, demos and training."""

from __future__ import annotations

import typer

from icibenefit.cli_common import not_implemented

synth_app = typer.Typer(help="Generate synthetic data.", no_args_is_help=True)


@synth_app.command("cohort")
def synth_cohort(ctx: typer.Context) -> None:
    """Generate a synthetic cohort (DICOM CT + SEG/RTSTRUCT, FHIR NDJSON, outcomes)."""
    not_implemented("synth cohort")
