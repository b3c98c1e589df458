"""The ``icibenefit`` command line.

Each command group lives in a module of this package (``listener``: serve,
studies, jobs, outbox; ``predict``; ``train``; ``evaluate``; ``models``;
``demo``); this module only wires them together and turns our errors into one
clean line on stderr and a non-zero exit status.  Heavy libraries (torch, pyradiomics)
are imported inside the commands, so ``icibenefit --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from icibenefit import __version__

# Modules, not their command functions: ``icibenefit.cli.demo`` etc. stay the modules.
from icibenefit.cli import demo, evaluate, listener, models, predict, train
from icibenefit.errors import IciBenefitError
from icibenefit.synth.cli import synth_app

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


app.command()(listener.serve)
app.command()(demo.demo)
app.command()(predict.predict)
app.command()(train.train)
app.command()(evaluate.evaluate)
app.add_typer(synth_app, name="synth")
app.add_typer(listener.studies_app, name="studies")
app.add_typer(listener.jobs_app, name="jobs")
app.add_typer(listener.outbox_app, name="outbox")
app.add_typer(models.models_app, name="models")


def run() -> None:
    """Entry point that reports our own errors without a traceback."""
    try:
        app()
    except IciBenefitError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
