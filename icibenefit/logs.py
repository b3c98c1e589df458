"""Logging set-up shared by the service's processes and the command line."""

from __future__ import annotations

import logging
import re

from icibenefit.settings import Settings

NOISY_LIBRARY_LOGGERS = ("highdicom", "pykwalify", "radiomics")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 and C1 controls, DEL and the Unicode line/paragraph separators: anything a
# terminal or a log shipper could take as the end of a line or an escape sequence.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x00": "\\0"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    r"""``text`` with every control character written as a visible escape (``\n``, ``\x1b``)."""
    return _CONTROL.sub(_escape, text)


class OneLineFormatter(logging.Formatter):
    """Format a record as exactly one line.

    UIDs, AE titles and library messages come from peers, so a CR/LF in one
    could forge a log line that looks like ours; tracebacks are kept, with
    their line breaks escaped, so one record is still one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The usual format, control characters escaped."""
        return escape_controls(super().format(record))


def configure_logging(settings: Settings) -> None:
    """Plain, greppable, one-line log records on stderr.

    Python warnings (pydicom's and pynetdicom's complaints about received
    values) are routed through logging, so they get the same escaping.
    Log records must never carry patient names or identifiers; code logs the
    pseudonym from :func:`icibenefit.privacy.pseudonymize` instead.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    logging.captureWarnings(True)
    # These libraries narrate every step at INFO (highdicom copies modules,
    # pykwalify validates the radiomics YAML); only their warnings matter here.
    for chatty in NOISY_LIBRARY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.root.level))
