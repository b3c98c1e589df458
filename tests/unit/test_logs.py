"""Every log record is one line, whatever a peer put in the values it carries."""

from __future__ import annotations

import io
import logging
import warnings

import pytest

from icibenefit.logs import OneLineFormatter, configure_logging, escape_controls
from icibenefit.settings import Settings


def test_control_characters_are_escaped() -> None:
    assert escape_controls("1.2\r\n3\x00\x1b[31m\x7f\u2028") == "1.2\\r\\n3\\0\\x1b[31m\\x7f\\u2028"
    assert escape_controls("plain text, é") == "plain text, é"


def test_records_tracebacks_and_warnings_are_one_line(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging(Settings(data_dir=tmp_path))
    stream = io.StringIO()
    [handler] = logging.root.handlers
    assert isinstance(handler.formatter, OneLineFormatter)
    monkeypatch.setattr(handler, "stream", stream)
    forged = "1.2.3\r\n2026-01-01 00:00:00,000 INFO icibenefit.listener.scp: forged"
    logging.getLogger("pynetdicom.utils").warning("Non-conformant UID value '%s'", forged)
    try:
        raise ValueError(forged)
    except ValueError:
        logging.getLogger("icibenefit.test").exception("failed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(False)  # pytest may have replaced showwarning since
        logging.captureWarnings(True)
        warnings.warn(f"Invalid value for VR UI: {forged!s}", UserWarning, stacklevel=1)
    logging.captureWarnings(False)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert all(" forged" in line for line in lines)
    assert not any(line.startswith("2026-01-01") for line in lines)
