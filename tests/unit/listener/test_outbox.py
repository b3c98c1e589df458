from __future__ import annotations

import json
import time
from pathlib import Path

from pydicom import dcmread

from icibenefit.listener.outbox import OutboxSender, destination_of, pacs_target
from icibenefit.persistence import index
from icibenefit.persistence.outbox import Outbox
from tests.integration.listener.dicom_factory import write_ct_series
from tests.peers.common import free_port


def test_dicom_item_without_pacs_lands_in_outbox_folder(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    conn = index.connect(settings.data_dir)
    ds = dcmread(write_ct_series(tmp_path / "ct", 1).files[0])
    outbox = Outbox(conn, settings)
    item_id = outbox.enqueue_dicom(ds, study_uid=ds.StudyInstanceUID)
    assert item_id is not None
    assert outbox.enqueue_dicom(ds) is None  # same dedup key: nothing new
    assert outbox.depth() == 1
    sender = OutboxSender(conn, settings)
    assert sender.deliver_due() == 1
    delivered = settings.data_dir / "outbox" / "dicom" / f"{ds.SOPInstanceUID}.dcm"
    assert dcmread(delivered).SOPInstanceUID == ds.SOPInstanceUID
    assert outbox.depth() == 0
    assert outbox.counts()["done"] == 1
    assert list(outbox.pending_dir.iterdir()) == []
    assert sender.deliver_due() == 0


def test_fhir_item_without_server_lands_in_outbox_folder(make_settings) -> None:
    settings = make_settings()
    conn = index.connect(settings.data_dir)
    outbox = Outbox(conn, settings)
    body = {"resourceType": "RiskAssessment", "status": "final"}
    outbox.enqueue_fhir(
        "post", "RiskAssessment", body, "fhir:ra:1", headers={"If-None-Exist": "identifier=x|1"}
    )
    assert outbox.enqueue_fhir("post", "RiskAssessment", body, "fhir:ra:1") is None
    OutboxSender(conn, settings).deliver_due()
    files = list((settings.data_dir / "outbox" / "fhir").glob("*.json"))
    assert len(files) == 1
    request = json.loads(files[0].read_text())
    assert request["method"] == "POST"
    assert request["body"] == body
    assert request["headers"]["If-None-Exist"] == "identifier=x|1"


def test_unreachable_pacs_retries_with_backoff_then_dead_letter(
    make_settings, tmp_path: Path
) -> None:
    settings = make_settings(
        pacs_ae_title="NOBODY",
        pacs_host="127.0.0.1",
        pacs_port=free_port(),
        outbox_max_attempts=3,
        retry_base_seconds=1.0,
    )
    conn = index.connect(settings.data_dir)
    ds = dcmread(write_ct_series(tmp_path / "ct", 1).files[0])
    Outbox(conn, settings).enqueue_dicom(ds)
    sender = OutboxSender(conn, settings)
    gaps = []
    for attempt in range(1, 4):
        item = sender.claim(now=time.time() + 1e4 * attempt)
        assert item is not None
        assert item.attempts == attempt
        before = time.time()
        sender.attempt(item)
        row = conn.execute("SELECT state, next_attempt_at, last_error FROM outbox").fetchone()
        assert "association" in row["last_error"]
        gaps.append(row["next_attempt_at"] - before)
    assert row["state"] == "dead"
    assert 0.9 < gaps[0] < 1.5
    assert 1.9 < gaps[1] < 2.5
    assert sender.claim(now=time.time() + 1e6) is None
    assert len(list((settings.data_dir / "outbox" / "pending").iterdir())) == 1  # kept


def test_sending_items_are_requeued_after_crash(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    conn = index.connect(settings.data_dir)
    ds = dcmread(write_ct_series(tmp_path / "ct", 1).files[0])
    Outbox(conn, settings).enqueue_dicom(ds)
    sender = OutboxSender(conn, settings)
    assert sender.claim() is not None  # then the process "dies"
    assert sender.claim() is None
    assert sender.requeue_sending() == 1
    assert sender.deliver_due() == 1


def test_stowrs_destination_is_the_service_root_without_credentials(make_settings) -> None:
    settings = make_settings(
        pacs_destination="stowrs",
        pacs_stow_url="http://user:pw@pacs.example:8042/dicom-web/",
        pacs_stow_username="icibenefit",
        pacs_stow_password="s3cret",
    )
    assert pacs_target(settings) == "http://pacs.example:8042/dicom-web"
    assert destination_of(settings, "dicom") == "http://pacs.example:8042/dicom-web"
    assert pacs_target(make_settings()) is None
