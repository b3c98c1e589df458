"""Issue 10 acceptance: the status page in a real headless browser.

A real ``icibenefit serve`` (subprocess) receives synthetic CT studies from
dcmtk's ``storescu``; its workers run the product's job path (FHIR source from
an NDJSON folder, the reporting processor, the outbox) with a stand-in model
(``page_processor.py``).  Debian's chromium, driven by selenium through
chromium-driver, loads the status page, sees the processed study and its job,
presses Retry on a job made to fail, and sees it re-queued and then done.
Screenshots go to the test's tmp dir and to ``$ICIBENEFIT_TEST_ARTIFACTS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from peers.browser import save_screenshot

from icibenefit.audit import study_reference
from icibenefit.privacy import pseudonymize
from tests.integration.listener.dicom_factory import write_ct_series
from tests.integration.listener.server import ListenerProcess
from tests.integration.status_page.page_service import (
    KEY,
    PATIENT_ID,
    PATIENT_NAME,
    job_of,
    outbox_empty,
    send,
)

pytestmark = pytest.mark.integration


def test_status_page_in_chromium(service: ListenerProcess, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    # Form posts (Retry) navigate: element look-ups wait for the next page.
    browser.implicitly_wait(15)
    page_url = service.status_url + "/"
    first = write_ct_series(
        tmp_path / "ct1", 3, patient_id=PATIENT_ID, patient_name=PATIENT_NAME, seed=1
    )
    send(service, first)
    done = service.wait_for(lambda: job_of(service, first.study_uid, "done"), timeout=120)
    service.wait_for(lambda: outbox_empty(service), timeout=60)

    browser.get(page_url)
    assert browser.title == "icibenefit status"
    reference = study_reference(first.study_uid, KEY)
    study_row = browser.find_element(By.CSS_SELECTOR, f'#studies tr[data-study-ref="{reference}"]')
    assert pseudonymize(PATIENT_ID, KEY) in study_row.text
    assert "done" in study_row.text
    job_row = browser.find_element(By.CSS_SELECTOR, f'#jobs tr[data-job-id="{done["id"]}"]')
    assert job_row.get_attribute("data-state") == "done"
    assert reference in job_row.text
    assert "pfs6 0.70 (low)" in browser.find_element(By.ID, "predictions").text
    assert "depth 0" in browser.find_element(By.ID, "outbox-depth").text
    assert "not configured" in browser.find_element(By.ID, "connections").text
    body = browser.find_element(By.TAG_NAME, "body").text
    assert PATIENT_ID not in body
    assert "Tester" not in body
    assert first.study_uid not in browser.page_source
    save_screenshot(browser, tmp_path, "status-page-processed.png")

    # A job that fails: with job_max_attempts = 1 it is dead at once.
    marker = service.data_dir / "FAIL"
    marker.write_text("")
    second = write_ct_series(
        tmp_path / "ct2", 2, patient_id=PATIENT_ID, patient_name=PATIENT_NAME, seed=2
    )
    send(service, second)
    dead = service.wait_for(lambda: job_of(service, second.study_uid, "dead"), timeout=120)
    browser.get(page_url)
    dead_row = browser.find_element(By.CSS_SELECTOR, f'#jobs tr[data-job-id="{dead["id"]}"]')
    assert dead_row.get_attribute("data-state") == "dead"
    assert "failing on purpose" in dead_row.text
    save_screenshot(browser, tmp_path, "status-page-dead-job.png")

    marker.unlink()
    browser.find_element(By.ID, f"retry-{dead['id']}").click()
    flash = browser.find_element(By.ID, "flash")
    assert flash.text == f"Job {dead['id']} re-queued."
    retried = service.wait_for(lambda: job_of(service, second.study_uid, "done"), timeout=120)
    assert retried["id"] == dead["id"]
    assert retried["attempts"] == 1, "the retry starts a fresh attempt budget"
    service.wait_for(lambda: outbox_empty(service), timeout=60)
    browser.get(page_url)
    row = browser.find_element(By.CSS_SELECTOR, f'#jobs tr[data-job-id="{dead["id"]}"]')
    assert row.get_attribute("data-state") == "done"
    assert not browser.find_elements(By.ID, f"retry-{dead['id']}")
    save_screenshot(browser, tmp_path, "status-page-retried.png")
