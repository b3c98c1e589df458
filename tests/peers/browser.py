"""Headless Debian Chromium driven by selenium through chromium-driver (fixture plugin).

``browser`` yields a selenium ``webdriver.Chrome`` on Debian's ``/usr/bin/chromium``
(no driver download: Selenium Manager is kept offline) with the flags this
machine's closed network needs, a fresh profile per test and the browser's
console log recorded (``driver.get_log("browser")``).  :func:`save_screenshot`
keeps screenshots in the test's tmp dir and, when ``$ICIBENEFIT_TEST_ARTIFACTS``
is set, in that folder too (CI keeps them as test artefacts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--enable-unsafe-swiftshader",  # WebGL on the CPU, for OHIF's cornerstone viewports
    "--window-size=1600,1000",
)


def save_screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    """Save a PNG of the page in ``tmp_path`` (and the artefacts folder, when set)."""
    target = tmp_path / name
    assert driver.save_screenshot(str(target)), "screenshot failed"
    assert target.stat().st_size > 1000
    artifacts = os.environ.get("ICIBENEFIT_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, Path(artifacts) / name)
    return target


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Debian chromium through chromium-driver (no driver download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists(), "Debian package chromium is missing (make setup installs it)"
    assert CHROMEDRIVER.exists(), "Debian package chromium-driver is missing"
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
