"""kill -9 during concurrent sends, then restart: nothing acknowledged is lost."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.integration.listener.dicom_factory import dataset_sha256, write_ct_series
from tests.integration.listener.server import STORESCU_ENV, storescu_command

pytestmark = pytest.mark.integration


def _acknowledged(storescu_output: str) -> list[Path]:
    """Files storescu reported as stored (its -v log pairs "Sending file" with a response)."""
    stored, current = [], None
    for line in storescu_output.splitlines():
        if match := re.search(r"Sending file: (.+)$", line):
            current = Path(match.group(1))
        elif "Received Store Response (Success)" in line and current is not None:
            stored.append(current)
            current = None
    return stored


def _stored_total(metrics: str) -> int:
    match = re.search(r"^icibenefit_instances_stored_total (\d+)$", metrics, re.MULTILINE)
    return int(match.group(1)) if match else 0


def test_kill_9_during_three_concurrent_sends_then_restart(start_listener, tmp_path: Path) -> None:
    server = start_listener(workers=2)
    studies = [
        write_ct_series(tmp_path / f"study{i}", 150, size=128, seed=i, patient_id=f"KILL-{i}")
        for i in range(3)
    ]
    senders = [
        subprocess.Popen(
            storescu_command(server.port, study.files, verbose=True),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=STORESCU_ENV,
        )
        for study in studies
    ]
    server.wait_for(lambda: _stored_total(server.metrics()) >= 90, timeout=60, interval=0.01)
    server.kill()
    outputs = [sender.communicate(timeout=60)[0] for sender in senders]
    acknowledged = [path for output in outputs for path in _acknowledged(output)]
    total = sum(len(study.files) for study in studies)
    assert 90 <= len(acknowledged) < total, "the kill must interrupt the transfers"
    assert any(sender.returncode != 0 for sender in senders)

    server.start()
    conn = sqlite3.connect(server.data_dir / "index.sqlite")
    conn.row_factory = sqlite3.Row
    for path in acknowledged:
        sop = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        row = conn.execute("SELECT path, sha256 FROM instances WHERE sop_instance_uid = ?", (sop,))
        found = row.fetchone()
        assert found is not None, f"{path} was acknowledged but is not indexed"
        assert found["sha256"] == dataset_sha256(path) == dataset_sha256(Path(found["path"]))
    assert list((server.data_dir / "dicom" / ".incoming").iterdir()) == []

    received = {r[0] for r in conn.execute("SELECT DISTINCT study_uid FROM instances")}
    assert received <= {study.study_uid for study in studies}
    assert len(received) >= 2

    def all_done() -> bool:
        states = {s["study_uid"]: s["state"] for s in server.get("/studies")}
        return set(states) == received and set(states.values()) == {"done"}

    server.wait_for(all_done, timeout=60)
    time.sleep(2.0)  # two more quiet periods: no second job may appear
    jobs = conn.execute("SELECT study_uid, version, state FROM jobs ORDER BY study_uid").fetchall()
    assert sorted(tuple(j) for j in jobs) == sorted((uid, 1, "done") for uid in received)
    processed = conn.execute("SELECT study_uid, count(*) FROM processed GROUP BY study_uid")
    assert dict(processed.fetchall()) == dict.fromkeys(received, 1)
    counts = dict(conn.execute("SELECT study_uid, instances FROM studies").fetchall())
    indexed = dict(
        conn.execute("SELECT study_uid, count(*) FROM instances GROUP BY study_uid").fetchall()
    )
    assert counts == indexed
