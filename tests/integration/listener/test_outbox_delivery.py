"""Outbox destination down: retried with backoff; delivered exactly once when it returns."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.integration.listener.dicom_factory import write_ct_series
from tests.integration.listener.echo_processor import echo_sop_instance_uid
from tests.integration.listener.server import storescu
from tests.peers.common import free_port

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


def _attempt_times(log: str, item_id: int) -> list[float]:
    pattern = re.compile(
        rf"^(\S+ \S+) WARNING \S+: outbox item {item_id} attempt \d+ failed", re.MULTILINE
    )
    return [
        dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for stamp in pattern.findall(log)
    ]


def test_outbox_retries_with_backoff_and_delivers_each_item_once(
    start_listener, tmp_path: Path
) -> None:
    pacs_port = free_port()
    server = start_listener(
        extra_env={"PYTHONPATH": str(HERE)},
        job_processor="echo_processor:build",
        pacs_ae_title="STORESCP",
        pacs_host="127.0.0.1",
        pacs_port=pacs_port,
        retry_base_seconds=0.3,
        outbox_max_attempts=20,
    )
    studies = [write_ct_series(tmp_path / f"s{i}", 2, seed=i) for i in range(2)]
    for study in studies:
        assert storescu(server.port, study.files).returncode == 0
    conn = sqlite3.connect(server.data_dir / "index.sqlite")

    def attempts() -> list[int]:
        return [r[0] for r in conn.execute("SELECT attempts FROM outbox ORDER BY id")]

    server.wait_for(lambda: len(attempts()) == 2 and min(attempts()) >= 4, timeout=30)
    assert "icibenefit_outbox_depth 2" in server.metrics()
    times = _attempt_times(server.log(), 1)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) >= 3
    for number, gap in enumerate(gaps):  # retry_base_seconds * 2**(attempt - 1) at least
        assert gap >= 0.3 * 2**number, f"no exponential backoff: {gaps}"
    assert gaps == sorted(gaps)

    received = tmp_path / "received"
    received.mkdir()
    pacs = subprocess.Popen(
        ["/usr/bin/storescp", "+uf", "-aet", "STORESCP", "-od", str(received), str(pacs_port)],
        env={"TCP_NODELAY": "1"},
    )
    try:
        server.wait_for(
            lambda: [r[0] for r in conn.execute("SELECT state FROM outbox")] == ["done", "done"],
            timeout=60,
        )
        time.sleep(1.0)  # anything sent twice would arrive now
    finally:
        pacs.terminate()
        pacs.wait(10)
    files = sorted(received.iterdir())
    sops = sorted(str(dcmread(f).SOPInstanceUID) for f in files)
    assert sops == sorted(echo_sop_instance_uid(study.study_uid) for study in studies)
    assert "icibenefit_outbox_depth 0" in server.metrics()
