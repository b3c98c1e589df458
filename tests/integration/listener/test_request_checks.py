"""C-STORE requests checked against the negotiated context (issue 18 points 3 and 5).

A pynetdicom SCU sends requests a careless or hostile sender could: an MR over
the CT or the Verification context, a CT whose dataset says MR, empty and
over-long Affected SOP Instance UIDs.  Each gets a failure status (never
silence), is counted in ``/metrics`` and audited; a valid CT is still stored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from icibenefit import audit
from tests.integration.listener.dicom_factory import write_ct_series
from tests.integration.listener.server import AE_TITLE

pytestmark = pytest.mark.integration

SOP_CLASS_NOT_SUPPORTED = 0x0122
DATASET_MISMATCH = 0xA900


def _associate(port: int) -> Association:
    scu = AE(ae_title="TESTSCU")
    scu.dimse_timeout = 15
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    return assoc


def _send(
    assoc: Association,
    ds: Dataset,
    *,
    context: Any = None,
    change: Callable[[Any], None] | None = None,
) -> int | None:
    """C-STORE ``ds``, optionally over another context or with a changed request."""
    original_context = assoc._get_valid_context
    original_send = assoc.dimse.send_msg
    if context is not None:
        assoc._get_valid_context = lambda *args, **kwargs: context  # type: ignore[method-assign]
    if change is not None:

        def send(request: Any, context_id: int) -> None:
            change(request)
            original_send(request, context_id)

        assoc.dimse.send_msg = send  # type: ignore[method-assign]
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc._get_valid_context = original_context  # type: ignore[method-assign]
        assoc.dimse.send_msg = original_send  # type: ignore[method-assign]
    return int(status.Status) if "Status" in status else None


def _context(assoc: Association, abstract_syntax: str) -> Any:
    [context] = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == abstract_syntax]
    return context


def _as_mr(ds: Dataset) -> Dataset:
    mr = dcmread(ds.filename) if hasattr(ds, "filename") else ds
    mr.SOPClassUID = MRImageStorage
    mr.SOPInstanceUID = generate_uid()
    mr.Modality = "MR"
    return mr


def test_sop_class_checks_and_bad_uids_get_failure_statuses(start_listener, tmp_path: Path) -> None:
    server = start_listener()
    series = write_ct_series(tmp_path / "ct", 6)  # the last one is valid
    ct = [dcmread(path) for path in series.files]
    assoc = _associate(server.port)
    ct_context = _context(assoc, CTImageStorage)
    echo_context = _context(assoc, Verification)
    try:
        assert _send(assoc, _as_mr(ct[0]), context=ct_context) == SOP_CLASS_NOT_SUPPORTED
        assert _send(assoc, _as_mr(ct[1]), context=echo_context) == SOP_CLASS_NOT_SUPPORTED

        def dataset_says_mr(request: Any) -> None:
            request.AffectedSOPClassUID = CTImageStorage

        assert (
            _send(assoc, _as_mr(ct[2]), context=ct_context, change=dataset_says_mr)
            == DATASET_MISMATCH
        )

        def empty_instance(request: Any) -> None:
            request.AffectedSOPInstanceUID = ""

        def long_instance(request: Any) -> None:
            # past pynetdicom's setter, which refuses to encode it
            request._affected_sop_instance_uid = UID("1.2." + "3" * 80)

        assert _send(assoc, ct[3], change=empty_instance) not in (None, 0x0000)
        assert _send(assoc, ct[4], change=long_instance) not in (None, 0x0000)
        empty_pixels = dcmread(series.files[0])
        empty_pixels.SOPInstanceUID = generate_uid()
        empty_pixels.PixelData = b""
        assert _send(assoc, empty_pixels) not in (None, 0x0000)
        assert _send(assoc, ct[5]) == 0x0000  # the association still works
        assert assoc.is_established
    finally:
        assoc.release()

    metrics = server.metrics()
    assert "icibenefit_instances_failed_total 6" in metrics
    assert "icibenefit_instances_stored_total 1" in metrics
    log = audit.AuditLog(server.data_dir / "audit", "unused", max_bytes=1 << 20, backups=0)
    refused = [e for e in log.entries() if e["event"] == "instance_refused"]
    statuses = sorted(e["details"]["status"] for e in refused)
    assert statuses[:3] == ["0x0122", "0x0122", "0xA900"], statuses
    assert len(refused) == 6


FORGED = "1999-01-01 00:00:00,000 INFO icibenefit.listener.scp: forged line"


def test_control_characters_in_uids_cannot_forge_log_lines(start_listener, tmp_path: Path) -> None:
    server = start_listener()
    series = write_ct_series(tmp_path / "ct", 2)
    assoc = _associate(server.port)

    def forging_uid(request: Any) -> None:
        request._affected_sop_instance_uid = UID(f"1.2.3\r\n{FORGED}\x00\r\n")

    try:
        assert _send(assoc, dcmread(series.files[0]), change=forging_uid) not in (None, 0)
        assert _send(assoc, dcmread(series.files[1])) == 0x0000
    finally:
        assoc.release()
    log = server.log()
    lines = [line for line in log.splitlines() if "forged line" in line]
    assert lines, log  # the library's warning about the UID was logged ...
    for line in lines:  # ... on one escaped line
        assert "1.2.3\\r\\n1999-01-01" in line
    assert not any(line.startswith("1999-01-01") for line in log.splitlines())
