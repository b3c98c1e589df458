"""Issue 15 acceptance: a radiologist opens icibenefit's result in a real OHIF viewer.

A real Orthanc with its DICOMweb plugin holds one patient's baseline and
follow-up CT, their tumour SEGs and the icibenefit SR of the follow-up study.
The pinned ``@ohif/app`` build is served same-origin with a proxy to Orthanc's
DICOMweb (``peers.ohif``) and opened in Debian's headless Chromium.  The test
asserts what a radiologist would check: the result is listed in the study, the
SR opens without breaking the viewer and shows the probabilities, the risk
groups, the model version and the demonstration label, and the SEG tumour is
displayed over the CT.  Screenshots go to ``$ICIBENEFIT_TEST_ARTIFACTS``.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from peers.browser import save_screenshot
from peers.ohif import OhifServer, serve_ohif
from peers.orthanc import OrthancPeer
from pydicom import Dataset
from unit.reporting.factories import Case

from icibenefit.reporting.pdf_report import build_pdf_report
from icibenefit.reporting.sr import build_sr

pytestmark = pytest.mark.integration

PROBABILITIES = {"pfs6": 0.73, "pfs9": 0.41}
ERROR_BANNER = "Something went wrong"


def _upload(pacs: OrthancPeer, datasets: list[Dataset]) -> None:
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        pacs.rest.post("/instances", content=buffer.getvalue()).raise_for_status()


@pytest.fixture
def viewer_case(start_orthanc: Callable[..., OrthancPeer]) -> Iterator[tuple[OhifServer, Case]]:
    """Orthanc holding one patient's CTs, SEGs and SR, and OHIF serving it."""
    pacs = start_orthanc(dicomweb=True)
    case = Case(n_followups=1, anatomy=True)
    prediction = case.prediction(PROBABILITIES)
    sr = build_sr(prediction, case.images, case.segmentations)
    pdf = build_pdf_report(prediction, case.images, case.segmentations)
    _upload(pacs, [*case.images, *case.segmentations, sr, pdf])
    server = serve_ohif(pacs.url)
    try:
        yield server, case
    finally:
        server.stop()


def _wait_text(driver: Any, text: str, timeout: float = 60.0) -> str:
    """Wait until ``text`` is in the page's visible text; return that text."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element(By.TAG_NAME, "body").text
        if text in body:
            return str(body)
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not shown within {timeout} s; page shows:\n{body[:2000]}")


def _click(driver: Any, label: str, timeout: float = 30.0) -> None:
    """Click the first element whose text is ``label``, once it appears."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buttons = driver.find_elements(By.XPATH, f"//*[normalize-space(text())={label!r}]")
        if buttons:
            buttons[0].click()
            return
        time.sleep(0.5)
    raise AssertionError(f"no {label!r} button appeared within {timeout} s")


def _skip_tour(driver: Any) -> None:
    """Dismiss OHIF's onboarding tour, which covers the viewer once the first image shows."""
    _click(driver, "Skip all")


def _open_series(driver: Any, xpath: str) -> None:
    """Double-click the study browser entry found by ``xpath`` (loads it in the viewport)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    entry = driver.find_element(By.XPATH, xpath)
    ActionChains(driver).double_click(entry).perform()


def _red_pixels(png: Path) -> int:
    """Pixels of the screenshot's viewport area that are clearly red (a segment overlay)."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    viewport = rgb[60:, 300:]  # right of the study browser, below the toolbar
    red, green, blue = viewport[..., 0], viewport[..., 1], viewport[..., 2]
    return int(np.count_nonzero((red > 140) & (red - green > 60) & (red - blue > 60)))


def _console_errors(driver: Any) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon" not in entry["message"]
    ]


def test_sr_opens_in_ohif_and_shows_the_result(
    viewer_case: tuple[OhifServer, Case], browser: Any, tmp_path: Path
) -> None:
    server, case = viewer_case
    follow_up = case.timepoints[-1].study_uid
    browser.get(server.viewer_url(follow_up))
    page = _wait_text(browser, "icibenefit")
    _skip_tour(browser)
    assert "SR" in page
    assert "SEG" in page
    save_screenshot(browser, tmp_path, "ohif-study.png")

    _open_series(browser, "//*[contains(text(), 'icibenefit ICI benefit')]")
    time.sleep(5)
    page = _wait_text(browser, "PFS6")
    save_screenshot(browser, tmp_path, "ohif-icibenefit-sr.png")
    assert ERROR_BANNER not in page
    assert not [m for m in _console_errors(browser) if "TypeError" in m]
    assert "0.73" in page
    assert "0.41" in page
    assert "low risk" in page  # PFS6 0.73
    assert "high risk" in page  # PFS9 0.41
    assert "2024.1.0" in page
    assert "not for clinical use" in page.lower()


def test_seg_tumour_displays_over_the_ct(
    viewer_case: tuple[OhifServer, Case], browser: Any, tmp_path: Path
) -> None:
    server, case = viewer_case
    browser.get(server.viewer_url(case.timepoints[-1].study_uid))
    _wait_text(browser, "SEG")
    _skip_tour(browser)
    before = _red_pixels(save_screenshot(browser, tmp_path, "ohif-ct-before-seg.png"))
    _open_series(browser, "//*[normalize-space(text())='SEG']")
    _click(browser, "Yes")  # "Do you want to open this Segmentation?"
    time.sleep(5)
    after = _red_pixels(save_screenshot(browser, tmp_path, "ohif-seg-over-ct.png"))
    assert ERROR_BANNER not in _wait_text(browser, "SEG")
    # The CT is grey; OHIF paints the tumour segment in colour over it.
    assert before == 0
    assert after > 200, f"no segment overlay visible ({after} red pixels)"


def _displayed_pdf(driver: Any, timeout: float = 60.0) -> bytes:
    """The bytes of the PDF that OHIF's PDF viewport shows (its ``<object>``'s data)."""
    import base64

    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = driver.find_elements(By.CSS_SELECTOR, "object[type='application/pdf']")
        url = found[0].get_attribute("data") if found else None
        if url:
            encoded = driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {"
                " let s = ''; const a = new Uint8Array(b);"
                " for (let i = 0; i < a.length; i++) s += String.fromCharCode(a[i]);"
                " done(btoa(s)); }).catch(e => done(''));",
                url,
            )
            if encoded:
                return base64.b64decode(encoded)
        time.sleep(0.5)
    raise AssertionError("OHIF did not display the PDF report")


def test_pdf_report_displays_in_ohif(
    viewer_case: tuple[OhifServer, Case], browser: Any, tmp_path: Path
) -> None:
    server, case = viewer_case
    browser.get(server.viewer_url(case.timepoints[-1].study_uid))
    _wait_text(browser, "icibenefit report")
    _skip_tour(browser)
    _open_series(browser, "//*[contains(text(), 'icibenefit report')]")
    pdf = _displayed_pdf(browser)
    save_screenshot(browser, tmp_path, "ohif-icibenefit-pdf.png")
    assert ERROR_BANNER not in _wait_text(browser, "icibenefit report")
    assert pdf.startswith(b"%PDF")
    # Poppler's pdftotext reads what a radiologist would read in the document.
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "0.73" in text
    assert "0.41" in text
    assert "2024.1.0" in text
    assert "not for clinical use" in text.lower()
