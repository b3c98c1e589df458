"""Ingest speed: dcmtk storescu -> icibenefit serve vs -> dcmtk storescp.

A 300-slice 512 x 512 CT (the `full` cohort size, ~150 MB) is sent by
``/usr/bin/storescu`` with TCP_NODELAY=1 to each receiver in the same run;
the best of a few rounds is compared.  icibenefit fsyncs every file and its
index commit before answering, storescp does not fsync.  Target (issue 3):
icibenefit within 2.0x of storescp's wall time.

Two reference lines show why that target is out of reach for any pynetdicom
SCP with per-instance durability on this kind of machine: a pynetdicom SCP
that discards every dataset, once as released and once with its 1 ms polling
sleeps removed (pynetdicom issue #650; benchmark-only patch), and the bare
cost of write + fsync + rename + directory fsync of the same files.  Their
sum is a lower bound for a durable pynetdicom listener.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.listener.dicom_factory import write_ct_series
from tests.integration.listener.server import (
    STORESCU_ENV,
    ListenerProcess,
    listener_settings,
    storescu,
)
from tests.peers.common import free_port

N_SLICES = 300
ROUNDS = 3
TARGET_RATIO = 2.0


def _timed_send(port: int, files: list[Path], called_ae: str) -> float:
    started = time.perf_counter()
    result = storescu(port, files, called_ae=called_ae)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr[-2000:]}")
    return elapsed


def _time_storescp(files: list[Path], workdir: Path) -> float:
    best = float("inf")
    for round_number in range(ROUNDS):
        out = workdir / f"storescp{round_number}"
        out.mkdir()
        port = free_port()
        receiver = subprocess.Popen(
            ["/usr/bin/storescp", "+xa", "-aet", "STORESCP", "-od", str(out), str(port)],
            env=STORESCU_ENV,
        )
        try:
            time.sleep(0.5)
            best = min(best, _timed_send(port, files, "STORESCP"))
        finally:
            receiver.terminate()
            receiver.wait(10)
    return best


def _time_icibenefit(files: list[Path], workdir: Path) -> float:
    best = float("inf")
    for round_number in range(ROUNDS):
        root = workdir / f"icibenefit{round_number}"
        root.mkdir()
        server = ListenerProcess(root, listener_settings(root, study_quiet_seconds=60))
        server.start()
        try:
            best = min(best, _timed_send(server.port, files, "ICIBENEFIT"))
        finally:
            server.terminate()
    return best


@contextmanager
def _without_polling_sleeps() -> Iterator[None]:
    """Make pynetdicom's 1 ms reactor sleeps yield instead (benchmark reference only)."""
    import pynetdicom.association
    import pynetdicom.dul

    def short_sleep(seconds: float) -> None:
        time.sleep(0 if seconds <= 0.001 else seconds)

    patched = types.SimpleNamespace(
        **{name: getattr(time, name) for name in dir(time) if not name.startswith("__")}
    )
    patched.sleep = short_sleep
    modules = (pynetdicom.association, pynetdicom.dul)
    originals = [module.time for module in modules]  # type: ignore[attr-defined]
    for module in modules:
        module.time = patched  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.time = original  # type: ignore[attr-defined]


def _time_pynetdicom_floor(files: list[Path]) -> float:
    """A pynetdicom SCP that discards every dataset: the floor of any pynetdicom listener."""
    from pynetdicom import AE, evt

    from icibenefit.listener.scp import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES

    ae = AE(ae_title="FLOOR")
    ae.maximum_pdu_size = 0
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    best = float("inf")
    for _ in range(ROUNDS):
        port = free_port()
        server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0)]
        )
        assert server is not None
        try:
            best = min(best, _timed_send(port, files, "FLOOR"))
        finally:
            server.shutdown()
    return best


def _time_fsync_only(files: list[Path], workdir: Path) -> float:
    """Write, fsync, rename and fsync the directory of every file, as a durable store must."""
    target = workdir / "fsync-only"
    target.mkdir()
    payloads = [f.read_bytes() for f in files]
    started = time.perf_counter()
    directory = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for number, payload in enumerate(payloads):
            temp = target / f"{number}.part"
            with open(temp, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target / f"{number}.dcm")
            os.fsync(directory)
    finally:
        os.close(directory)
    return time.perf_counter() - started


def main() -> None:
    """Print both wall times and their ratio."""
    with tempfile.TemporaryDirectory(prefix="bench-listener-") as tmp:
        workdir = Path(tmp)
        files = write_ct_series(workdir / "ct", N_SLICES, size=512, seed=1).files
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        storescp_seconds = _time_storescp(files, workdir)
        icibenefit_seconds = _time_icibenefit(files, workdir)
        floor_seconds = _time_pynetdicom_floor(files)
        with _without_polling_sleeps():
            no_sleep_seconds = _time_pynetdicom_floor(files)
        fsync_seconds = _time_fsync_only(files, workdir)
    ratio = icibenefit_seconds / storescp_seconds
    bound = no_sleep_seconds + fsync_seconds
    print(f"listener ingest: {N_SLICES} slices, {megabytes:.0f} MB, best of {ROUNDS}")
    print(f"  dcmtk storescp : {storescp_seconds:6.2f} s")
    print(f"  icibenefit     : {icibenefit_seconds:6.2f} s (fsync + SQLite WAL index)")
    print(f"  pynetdicom no-op SCP (reference floor): {floor_seconds:6.2f} s")
    print(f"  same, polling sleeps removed          : {no_sleep_seconds:6.2f} s")
    print(f"  write + fsync + rename + dir fsync only: {fsync_seconds:6.2f} s")
    print(
        f"  lower bound for a durable pynetdicom SCP: {bound:6.2f} s"
        f" ({bound / storescp_seconds:.2f}x storescp)"
    )
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"  ratio          : {ratio:6.2f}x ({verdict} target {TARGET_RATIO:.1f}x)")


if __name__ == "__main__":
    main()
