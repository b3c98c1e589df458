"""The offline ``predict`` command."""

from __future__ import annotations

import typer

from icibenefit.cli_common import not_implemented


def predict(ctx: typer.Context) -> None:
    """Predict for one patient from a DICOM folder and clinical data, without network."""
    not_implemented("predict")
