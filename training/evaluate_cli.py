"""The ``evaluate`` command: the paper's evaluation of a predictions table."""

from __future__ import annotations

import typer

from icibenefit.cli_common import not_implemented


def evaluate(ctx: typer.Context) -> None:
    """Evaluate predictions against outcomes as the paper does."""
    not_implemented("evaluate")
