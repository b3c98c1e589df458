"""Dead letters end to end: the PACS is down until the item is dead, an operator re-sends it.

``icibenefit serve`` runs with the echo processor and a PACS port nobody
listens on; after ``outbox_max_attempts`` the item is a dead letter, seen by
``icibenefit outbox list --json`` and ``/outbox``.  dcmtk's storescp then
opens the port, ``icibenefit outbox retry --all-dead`` re-queues the item and
the running service delivers it exactly once.  The audit file tells the story
with pseudonyms only.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from icibenefit import audit
from tests.integration.listener.dicom_factory import write_ct_series
from tests.integration.listener.echo_processor import echo_sop_instance_uid
from tests.integration.listener.server import ICIBENEFIT, ListenerProcess, echoscu, storescu
from tests.peers.common import free_port

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
FAKE_PATIENT_ID = "FAKE-PAT-DEADLETTER-4411"
FAKE_NAME = "Letterman^Dead"


def _cli(server: ListenerProcess, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICIBENEFIT_")}
    config = server.workdir / "icibenefit.toml"
    return subprocess.run(
        [ICIBENEFIT, "--config", str(config), *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_dead_letter_is_listed_and_resent_once_after_retry(start_listener, tmp_path: Path) -> None:
    pacs_port = free_port()
    server = start_listener(
        extra_env={"PYTHONPATH": str(HERE)},
        job_processor="echo_processor:build",
        pacs_ae_title="STORESCP",
        pacs_host="127.0.0.1",
        pacs_port=pacs_port,
        retry_base_seconds=0.2,
        outbox_max_attempts=2,
        allowed_calling_ae_titles=["TESTSCU"],
    )
    study = write_ct_series(tmp_path / "ct", 2, patient_id=FAKE_PATIENT_ID, patient_name=FAKE_NAME)
    assert storescu(server.port, study.files).returncode == 0
    assert echoscu(server.port, calling_ae="INTRUDER").returncode != 0
    server.wait_for(lambda: server.get("/outbox?state=dead"), timeout=30)

    listed = _cli(server, "outbox", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [item] = json.loads(listed.stdout)
    assert (item["kind"], item["state"], item["attempts"]) == ("dicom", "dead", 2)
    assert item["destination"] == f"STORESCP@127.0.0.1:{pacs_port}"
    assert "association" in item["last_error"]
    assert server.get("/outbox") == [item]

    received = tmp_path / "received"
    received.mkdir()
    pacs = subprocess.Popen(
        ["/usr/bin/storescp", "+uf", "-aet", "STORESCP", "-od", str(received), str(pacs_port)],
        env={"TCP_NODELAY": "1"},
    )
    try:
        time.sleep(0.5)
        assert not list(received.iterdir())  # dead letters stay put until an operator acts
        retried = _cli(server, "outbox", "retry", "--all-dead")
        assert retried.returncode == 0, retried.stderr
        assert "re-queued 1 item(s)" in retried.stdout
        server.wait_for(lambda: server.get("/outbox?state=sent"), timeout=30)
        time.sleep(1.0)  # anything sent twice would arrive now
    finally:
        pacs.terminate()
        pacs.wait(10)
    files = list(received.iterdir())
    assert [str(dcmread(f).SOPInstanceUID) for f in files] == [
        echo_sop_instance_uid(study.study_uid)
    ]
    again = _cli(server, "outbox", "retry", str(item["id"]))
    assert again.returncode == 1
    assert "is done, not dead" in again.stderr

    log = audit.AuditLog(server.data_dir / "audit", "unused", max_bytes=1 << 20, backups=0)
    entries = list(log.entries())
    events = [(e["event"], e["outcome"]) for e in entries if e["event"] != "received"]
    for expected in [
        ("association_rejected", "rejected"),
        ("dead_letter", "dead"),
        ("outbox_retried", "requeued"),
        ("sent", "delivered"),
        ("outbox_retried", "refused"),
    ]:
        assert events.count(expected) == 1, events
    [rejected] = [e for e in entries if e["event"] == "association_rejected"]
    assert rejected["actor"] == "INTRUDER"
    [dead] = [e for e in entries if e["event"] == "dead_letter"]
    assert dead["patient"].startswith("p-")
    text = (server.data_dir / "audit" / "audit.jsonl").read_text()
    for clear in (FAKE_PATIENT_ID, FAKE_NAME, study.study_uid):
        assert clear not in text
    for clear in (FAKE_PATIENT_ID, FAKE_NAME):
        assert clear not in listed.stdout
