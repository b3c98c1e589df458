"""The ``train`` command: fit a recipe's models on a cohort and write a bundle."""

from __future__ import annotations

import typer

from icibenefit.cli_common import not_implemented


def train(ctx: typer.Context) -> None:
    """Train the models of a recipe on a cohort and write a model bundle."""
    not_implemented("train")
