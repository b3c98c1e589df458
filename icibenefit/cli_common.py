"""Helpers every command module uses: settings from the CLI context, logging."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from icibenefit.settings import Settings, load_settings


def settings_from(ctx: typer.Context, **overrides: Any) -> Settings:
    """Load settings with the ``--config`` file of the root command and CLI overrides."""
    config_file: Path | None = ctx.find_root().obj
    return load_settings(config_file, **overrides)


NOISY_LIBRARY_LOGGERS = ("highdicom", "pykwalify", "radiomics")


def configure_logging(settings: Settings) -> None:
    """Plain, greppable log lines on stderr.

    Log records must never carry patient names or identifiers; code logs the
    pseudonym from :func:`icibenefit.privacy.pseudonymize` instead.
    """
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # These libraries narrate every step at INFO (highdicom copies modules,
    # pykwalify validates the radiomics YAML); only their warnings matter here.
    for chatty in NOISY_LIBRARY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.root.level))
