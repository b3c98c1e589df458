"""Logging set-up shared by the service's processes and the command line."""

from __future__ import annotations

import logging

from icibenefit.settings import Settings

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
