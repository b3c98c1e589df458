"""Helpers every command module uses: settings from the CLI context, logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from icibenefit.logs import configure_logging
from icibenefit.settings import Settings, load_settings

__all__ = ["configure_logging", "settings_from"]


def settings_from(ctx: typer.Context, **overrides: Any) -> Settings:
    """Load settings with the ``--config`` file of the root command and CLI overrides."""
    config_file: Path | None = ctx.find_root().obj
    return load_settings(config_file, **overrides)
