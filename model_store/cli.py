"""Commands of the model store: ``models list|show|promote|rollback``."""

from __future__ import annotations

import typer

from icibenefit.cli_common import not_implemented

models_app = typer.Typer(help="Manage versioned model bundles.", no_args_is_help=True)


@models_app.command("list")
def models_list(ctx: typer.Context) -> None:
    """List the bundles of the model store."""
    not_implemented("models list")
