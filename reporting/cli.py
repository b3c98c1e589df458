"""The ``demo`` command that ``make run`` runs."""

from __future__ import annotations

import typer

from icibenefit.cli_common import not_implemented


def demo(ctx: typer.Context) -> None:
    """Run the whole loop on embedded defaults: synthetic patient in, reports out."""
    not_implemented("demo")
