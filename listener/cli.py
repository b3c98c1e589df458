"""Commands of the listener: ``serve``, ``studies``, ``jobs``."""

from __future__ import annotations

import typer

from icibenefit.cli_common import not_implemented

studies_app = typer.Typer(help="Inspect received studies.", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect and retry processing jobs.", no_args_is_help=True)


def serve(ctx: typer.Context) -> None:
    """Run the DICOM SCP, the workers and the status API until SIGTERM."""
    not_implemented("serve")


@studies_app.command("list")
def studies_list(ctx: typer.Context) -> None:
    """List received studies."""
    not_implemented("studies list")


@jobs_app.command("list")
def jobs_list(ctx: typer.Context) -> None:
    """List processing jobs."""
    not_implemented("jobs list")
