"""The status HTTP API of a running ``icibenefit serve``: JSON routes and the HTML page."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.listener.dicom_factory import PATIENT_ID, write_ct_series
from tests.integration.listener.server import storescu

pytestmark = pytest.mark.integration


def test_status_routes(start_listener, tmp_path: Path) -> None:
    server = start_listener()
    ct = write_ct_series(tmp_path / "ct", 2)
    assert storescu(server.port, ct.files).returncode == 0
    server.wait_for(lambda: [j["state"] for j in server.get("/jobs")] == ["done"])
    assert server.get("/health") == {"status": "ok"}
    assert server.get("/jobs?state=dead") == []
    page = httpx.get(server.status_url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert ct.study_uid[-10:] in page.text
    assert PATIENT_ID not in page.text
    forged = httpx.post(server.status_url + "/jobs/1/retry", data={"csrf_token": "guess"})
    assert forged.status_code == 403
    assert httpx.get(server.status_url + "/nope").status_code == 404
    assert httpx.post(server.status_url + "/metrics").status_code == 405
    metrics = httpx.get(server.status_url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "icibenefit_associations_total 1" in metrics.text
