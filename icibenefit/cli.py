"""The ``icibenefit`` command line.

Each part of the service contributes its own commands from its ``cli`` module;
this module only wires them together and turns our errors into one clean line
on stderr and a non-zero exit status.  Heavy libraries (torch, pyradiomics)
are imported inside the commands, so ``icibenefit --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from icibenefit import __version__
from icibenefit.errors import IciBenefitError
from icibenefit.listener.cli import jobs_app, outbox_app, serve, studies_app
from icibenefit.model_store.cli import models_app
from icibenefit.pipeline.cli import predict
from icibenefit.reporting.cli import demo
from icibenefit.synth.cli import synth_app
from icibenefit.training.cli import train
from icibenefit.training.evaluate_cli import evaluate

app = typer.Typer(
    name="icibenefit",
    help="Predict durable clinical benefit of anti-PD-1/PD-L1 therapy from CT and hemogram.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"icibenefit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Settings TOML file.", envvar="ICIBENEFIT_CONFIG"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """Keep the settings file for the subcommands, which load settings themselves."""
    ctx.obj = config


app.command()(serve)
app.command()(demo)
app.command()(predict)
app.command()(train)
app.command()(evaluate)
app.add_typer(synth_app, name="synth")
app.add_typer(studies_app, name="studies")
app.add_typer(jobs_app, name="jobs")
app.add_typer(outbox_app, name="outbox")
app.add_typer(models_app, name="models")


def run() -> None:
    """Entry point that reports our own errors without a traceback."""
    try:
        app()
    except IciBenefitError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
