"""The outbox delivers the SR and the PDF report by DICOMweb STOW-RS to a real Orthanc.

Orthanc's DICOMweb plugin is the origin server, with and without HTTP basic
authentication; items go through the same queue, dedup keys, retries and dead
letters as C-STORE deliveries.
"""

from __future__ import annotations

from contextlib import closing

import pytest
from unit.reporting.factories import Case

from icibenefit.listener.outbox import OutboxSender, list_items
from icibenefit.persistence import index
from icibenefit.persistence.outbox import Outbox
from icibenefit.reporting.pdf_report import build_pdf_report
from icibenefit.reporting.sr import build_sr
from tests.peers.common import free_port

pytestmark = pytest.mark.integration

CREDENTIALS = ("icibenefit", "s3cret")


@pytest.fixture(scope="module")
def reports():
    case = Case(n_followups=1)
    prediction = case.prediction()
    return [
        build_sr(prediction, case.images, case.segmentations),
        build_pdf_report(prediction, case.images, case.segmentations),
    ]


def _stow_settings(make_settings, url, auth=None, **extra):
    credentials = {}
    if auth is not None:
        credentials = {"pacs_stow_username": auth[0], "pacs_stow_password": auth[1]}
    return make_settings(pacs_destination="stowrs", pacs_stow_url=url, **credentials, **extra)


@pytest.mark.parametrize("auth", [None, CREDENTIALS], ids=["open", "basic-auth"])
def test_sr_and_pdf_are_delivered_by_stowrs_through_the_outbox(
    start_orthanc, make_settings, reports, auth
):
    pacs = start_orthanc(dicomweb=True, auth=auth)
    settings = _stow_settings(make_settings, f"{pacs.url}/dicom-web", auth)
    with closing(index.connect(settings.data_dir)) as conn:
        outbox = Outbox(conn, settings)
        for ds in reports:
            assert outbox.enqueue_dicom(ds, study_uid=str(ds.StudyInstanceUID)) is not None
            assert outbox.enqueue_dicom(ds) is None  # same deterministic UID: nothing new
        sender = OutboxSender(conn, settings)
        try:
            assert sender.deliver_due() == 2
        finally:
            sender.close()
        items = list_items(conn, settings)
    assert [item["state"] for item in items] == ["done", "done"]
    assert {item["destination"] for item in items} == {f"{pacs.url}/dicom-web"}
    for ds in reports:
        assert pacs.find_instance(str(ds.SOPInstanceUID)) is not None
    modalities = {
        pacs.rest.get(f"/instances/{pacs.find_instance(str(ds.SOPInstanceUID))}/tags?simplify")
        .json()
        .get("Modality")
        for ds in reports
    }
    assert modalities == {"SR", "DOC"}


def _deliver_once(settings, report):
    """Queue one report, make one delivery attempt, and return its outbox item."""
    with closing(index.connect(settings.data_dir)) as conn:
        Outbox(conn, settings).enqueue_dicom(report)
        sender = OutboxSender(conn, settings)
        try:
            sender.deliver_due()
        finally:
            sender.close()
        [item] = list_items(conn, settings)
    return item


def test_wrong_password_is_a_dead_letter_at_once(start_orthanc, make_settings, reports):
    pacs = start_orthanc(dicomweb=True, auth=CREDENTIALS)
    settings = _stow_settings(
        make_settings, f"{pacs.url}/dicom-web", ("icibenefit", "wrong"), outbox_max_attempts=5
    )
    item = _deliver_once(settings, reports[0])
    assert (item["state"], item["attempts"]) == ("dead", 1)
    assert "401" in item["last_error"]
    assert "wrong" not in item["last_error"]
    assert pacs.rest.get("/instances").json() == []


def test_unreachable_origin_server_is_retried(make_settings, reports):
    settings = _stow_settings(
        make_settings, f"http://127.0.0.1:{free_port()}/dicom-web", outbox_max_attempts=5
    )
    item = _deliver_once(settings, reports[1])
    assert (item["state"], item["attempts"]) == ("queued", 1)
    assert "STOW-RS" in item["last_error"]
