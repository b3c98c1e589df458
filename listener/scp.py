"""The DICOM SCP: presentation contexts, access control, TLS and thin handlers.

Handlers only validate, store and count; everything else (study completion,
jobs) happens elsewhere.  Access control layers, outermost first:

1. source address allow-list and "shutting down": checked on the TCP
   connection (``verify_request`` of the socketserver), so a refused peer gets
   no association at all;
2. TLS (PS3.15 / BCP 195: TLS 1.2+; with a CA file, peers must present a
   certificate it signs);
3. called AE title must be ours and the calling AE title on the allow-list:
   pynetdicom answers A-ASSOCIATE-RJ.

Every refusal is counted (``rejections``), logged and audited
(``connection_refused`` with the source address as actor,
``association_rejected`` with the calling AE title as actor).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import Counter
from functools import partial
from typing import Any

from pydicom import uid
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from icibenefit import audit
from icibenefit.listener.store import DicomStore
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

#: Storage SOP classes accepted -> their name (pydicom's UID dictionary).
STORAGE_SOP_CLASSES: dict[str, str] = {
    sop_class: sop_class.name
    for sop_class in (
        uid.CTImageStorage,
        uid.EnhancedCTImageStorage,
        uid.SegmentationStorage,
        uid.RTStructureSetStorage,
        uid.BasicTextSRStorage,
        uid.EnhancedSRStorage,
        uid.ComprehensiveSRStorage,
        uid.Comprehensive3DSRStorage,
        uid.ExtensibleSRStorage,
    )
}
TRANSFER_SYNTAXES: list[str] = [
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,  # retired, still sent by old modalities
    uid.JPEGLosslessSV1,
    uid.JPEGLossless,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.RLELossless,
]


TLS_HANDSHAKE_SECONDS = 10.0


class ScpCounters:
    """Thread-safe counters exported by ``/metrics`` (since process start)."""

    NAMES = (
        "associations",
        "rejections",
        "instances_stored",
        "bytes_stored",
        "instances_duplicate",
        "instances_failed",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        """Increase one counter."""
        with self._lock:
            self._values[name] += amount

    def snapshot(self) -> dict[str, int]:
        """Current values of every counter."""
        with self._lock:
            return {name: self._values[name] for name in self.NAMES}


def _accept_tls(
    server: ThreadedAssociationServer, context: ssl.SSLContext
) -> tuple[socket.socket, Any]:
    """Accept and handshake with a time limit.

    pynetdicom's own ``get_request`` handshakes in the accept loop without a
    timeout, so one silent TCP peer would block every later association.  A
    failed handshake raises ``OSError``, which socketserver treats as "drop
    this connection" (e.g. a plain DICOM peer on the TLS port).
    """
    assert server.socket is not None
    client, address = server.socket.accept()
    client.settimeout(TLS_HANDSHAKE_SECONDS)
    try:
        secured = context.wrap_socket(client, server_side=True)
    except OSError as exc:
        client.close()
        cause = getattr(exc, "reason", None) or type(exc).__name__
        _audit_refused_connection(str(address[0]), f"TLS handshake failed ({cause})")
        raise
    secured.settimeout(None)
    return secured, address


def _audit_refused_connection(address: str, reason: str) -> None:
    audit.record(
        "connection_refused",
        sync=False,
        component="listener.scp",
        actor=address,
        outcome="refused",
        details={"reason": reason},
    )


def rejection_reason(calling_ae: str, called_ae: str, settings: Settings) -> str:
    """Why pynetdicom rejected an association (its event does not say)."""
    reasons = []
    if called_ae.strip() != settings.scp_ae_title.strip():
        reasons.append("called AE title is not ours")
    allowed = [title.strip() for title in settings.allowed_calling_ae_titles]
    if allowed and calling_ae.strip() not in allowed:
        reasons.append("calling AE title not allowed")
    return "; ".join(reasons) or "association limit or user identity check"


def build_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context from the settings, or ``None`` when TLS is off."""
    if settings.tls_cert_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_ca_file is not None:
        context.load_verify_locations(settings.tls_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class StorageScp:
    """The running association server."""

    def __init__(self, settings: Settings, store: DicomStore, counters: ScpCounters) -> None:
        self.settings = settings
        self.store = store
        self.counters = counters
        self._accepting = True
        self._server: ThreadedAssociationServer | None = None
        self.ae = AE(ae_title=settings.scp_ae_title)
        self.ae.require_called_aet = True
        self.ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
        self.ae.maximum_pdu_size = 0  # no limit: fewer, larger P-DATA reads
        self.ae.add_supported_context(Verification, TRANSFER_SYNTAXES[:3])
        for sop_class in STORAGE_SOP_CLASSES:
            self.ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Listen in background threads."""
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, lambda event: self.counters.add("associations")),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        server = self.ae.start_server(
            (self.settings.scp_bind, self.settings.scp_port),
            block=False,
            evt_handlers=handlers,
        )
        assert server is not None  # non-blocking start always returns the server
        server.verify_request = self._verify_connection  # type: ignore[method-assign]
        ssl_context = build_ssl_context(self.settings)
        if ssl_context is not None:
            server.get_request = partial(_accept_tls, server, ssl_context)  # type: ignore[method-assign]
        self._server = server
        log.info(
            "SCP %s listening on %s:%d%s",
            self.settings.scp_ae_title,
            self.settings.scp_bind,
            self.port,
            " (TLS)" if self.settings.tls_cert_file else "",
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new associations, let in-flight ones finish, then close."""
        self._accepting = False
        server = self._server
        if server is None:
            return
        deadline = time.monotonic() + timeout
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in server.active_associations:
            log.warning("aborting association still open at shutdown")
            assoc.abort()
        server.shutdown()
        self._server = None

    def _verify_connection(self, request: Any, client_address: Any) -> bool:
        address = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        allowed = self.settings.allowed_source_addresses
        if not self._accepting or (allowed and address not in allowed):
            self.counters.add("rejections")
            reason = "shutting down" if not self._accepting else "source address not allowed"
            log.warning("refused connection from %s: %s", address, reason)
            _audit_refused_connection(address, reason)
            return False
        return True

    def _on_rejected(self, event: Event) -> None:
        self.counters.add("rejections")
        requestor = event.assoc.requestor
        called = str(getattr(requestor.primitive, "called_ae_title", "") or "")
        reason = rejection_reason(requestor.ae_title, called, self.settings)
        log.warning(
            "rejected association from %s (calling AE %r, called AE %r): %s",
            requestor.address,
            requestor.ae_title,
            called,
            reason,
        )
        audit.record(
            "association_rejected",
            sync=False,
            component="listener.scp",
            actor=requestor.ae_title,
            outcome="rejected",
            details={"address": requestor.address, "called_ae": called, "reason": reason},
        )

    def _on_store(self, event: Event) -> int:
        request: Any = event.request
        outcome = self.store.store(
            event.encoded_dataset(include_meta=False),
            str(event.context.transfer_syntax),
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            event.assoc.requestor.ae_title,
        )
        if outcome.disposition in ("stored", "replaced"):
            self.counters.add("instances_stored")
            self.counters.add("bytes_stored", outcome.size)
        elif outcome.disposition in ("duplicate", "conflict_kept"):
            self.counters.add("instances_duplicate")
        else:
            self.counters.add("instances_failed")
        return outcome.status
