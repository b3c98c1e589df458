"""The DICOM SCP: presentation contexts, access control, TLS and thin handlers.

Handlers only validate, store and count; everything else (study completion,
jobs) happens elsewhere.  Access control layers, outermost first:

1. source address allow-list, "shutting down", the total connection limit
   and the per-source connection limit: checked on the TCP connection
   (``verify_request`` of the socketserver), so a refused peer gets no
   association (and no thread) at all;
2. TLS (PS3.15 / BCP 195: TLS 1.2+; with a CA file, peers must present a
   certificate it signs);
3. called AE title must be ours and the calling AE title on the allow-list:
   pynetdicom answers A-ASSOCIATE-RJ.

Timeouts close what a silent or hostile peer leaves open: the ACSE timeout
(pynetdicom's ARTIM timer) a connection that sends no complete
A-ASSOCIATE-RQ, the network timeout an idle association, and a read timeout
on every accepted socket a peer that stops in the middle of a PDU (pynetdicom
reads the rest of a PDU with blocking ``recv`` calls, outside its timers).

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
from collections.abc import Callable
from functools import partial
from typing import Any

from pydicom import uid
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from icibenefit import audit
from icibenefit.listener.store import (
    CANNOT_UNDERSTAND,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    DicomStore,
    audit_refusal,
    is_valid_uid,
)
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


def _accept_plain(
    server: ThreadedAssociationServer, read_timeout: float
) -> tuple[socket.socket, Any]:
    """Accept a connection whose reads time out (see the module docstring)."""
    assert server.socket is not None
    client, address = server.socket.accept()
    client.settimeout(read_timeout)
    return client, address


def _accept_tls(
    server: ThreadedAssociationServer, context: ssl.SSLContext, read_timeout: float
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
    secured.settimeout(read_timeout)
    return secured, address


def _any_uid(value: str) -> tuple[bool, str]:
    """A pynetdicom UID validator that accepts everything (see :class:`StorageScp`)."""
    return True, ""


def _address_of(client_address: Any) -> str:
    return str(client_address[0] if isinstance(client_address, tuple) else client_address)


def _peer_of(client_address: Any) -> tuple[str, int]:
    if isinstance(client_address, tuple):
        return str(client_address[0]), int(client_address[1])
    return str(client_address), 0


def _audit_refused_connection(address: str, reason: str) -> None:
    audit.record(
        "connection_refused",
        sync=False,
        component="listener.scp",
        actor=address,
        outcome="refused",
        details={"reason": reason},
    )


def check_request(
    affected_sop_class: str, affected_sop_instance: str, context_abstract_syntax: str
) -> tuple[int, str] | None:
    """The failure status and reason for a C-STORE request, or ``None`` when acceptable.

    pynetdicom hands over any request on any accepted context (an MR over the
    CT context or over Verification), so the Affected SOP Class must be one
    we accept and the context's; the dataset's own SOP Class is checked
    against it later (0xA900, :func:`icibenefit.listener.store.parse_header`).
    The Affected SOP Instance UID is not logged: it may hold any bytes.
    """
    if affected_sop_class not in STORAGE_SOP_CLASSES:
        return SOP_CLASS_NOT_SUPPORTED, "Affected SOP Class is not one we accept"
    if affected_sop_class != context_abstract_syntax:
        return SOP_CLASS_NOT_SUPPORTED, "Affected SOP Class differs from the presentation context"
    if not is_valid_uid(affected_sop_instance):
        return CANNOT_UNDERSTAND, "Affected SOP Instance UID is not a valid UID"
    return None


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
        # Connections (address, port) accepted whose association thread may not
        # have started yet: counted with the running associations.
        self._pending: set[tuple[str, int]] = set()
        self._pending_lock = threading.Lock()
        # pynetdicom aborts an association whose request carries a UID it deems
        # invalid (over 64 characters), so the sender gets no C-STORE status.  Let
        # every UID through its decoder; check_request and the store validate
        # UIDs themselves and answer with a failure status.
        _config.VALIDATORS["UI"] = _any_uid
        self.ae = AE(ae_title=settings.scp_ae_title)
        self.ae.maximum_associations = settings.scp_max_associations
        self.ae.acse_timeout = settings.scp_acse_timeout_seconds
        self.ae.dimse_timeout = settings.scp_dimse_timeout_seconds
        self.ae.network_timeout = settings.scp_network_timeout_seconds
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
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        server = self.ae.start_server(
            (self.settings.scp_bind, self.settings.scp_port),
            block=False,
            evt_handlers=handlers,
        )
        assert server is not None  # non-blocking start always returns the server
        server.verify_request = self._verify_connection  # type: ignore[method-assign]
        read_timeout = self.settings.scp_read_timeout_seconds
        ssl_context = build_ssl_context(self.settings)
        if ssl_context is not None:
            server.get_request = partial(_accept_tls, server, ssl_context, read_timeout)  # type: ignore[method-assign]
        else:
            server.get_request = partial(_accept_plain, server, read_timeout)  # type: ignore[method-assign]
        server.process_request_thread = partial(  # type: ignore[method-assign]
            self._process_connection, server.process_request_thread
        )
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
        address = _address_of(client_address)
        reason = self._refusal_reason(address)
        if reason is not None:
            self.counters.add("rejections")
            log.warning("refused connection from %s: %s", address, reason)
            _audit_refused_connection(address, reason)
            return False
        with self._pending_lock:
            self._pending.add(_peer_of(client_address))
        return True

    def _refusal_reason(self, address: str) -> str | None:
        """Why a new TCP connection from ``address`` is refused, or ``None``."""
        allowed = self.settings.allowed_source_addresses
        if not self._accepting:
            return "shutting down"
        if allowed and address not in allowed:
            return "source address not allowed"
        server = self._server
        running = server.active_associations if server is not None else []
        # A connection is pending and running for a moment: count each peer once.
        with self._pending_lock:
            peers = self._pending | {
                (assoc.requestor.address, assoc.requestor.port) for assoc in running
            }
        total = len(peers)
        from_source = sum(1 for peer_address, _ in peers if peer_address == address)
        if total >= self.settings.scp_max_associations:
            return "connection limit reached"
        if from_source >= self.settings.scp_max_associations_per_source:
            return "per-source connection limit reached"
        return None

    def _process_connection(
        self, process: Callable[[Any, Any], None], request: Any, client_address: Any
    ) -> None:
        """Run pynetdicom's handler (it starts the association thread), then un-pend."""
        try:
            process(request, client_address)
        finally:
            with self._pending_lock:
                self._pending.discard(_peer_of(client_address))

    def _on_accepted(self, event: Event) -> None:
        self.counters.add("associations")
        assoc = event.assoc
        serve = assoc._serve_request
        assoc._serve_request = partial(self._serve_request, assoc, serve)  # type: ignore[method-assign]

    def _serve_request(
        self,
        assoc: Association,
        serve: Callable[[Any, int], None],
        message: Any,
        context_id: int,
    ) -> None:
        """Answer a C-STORE request pynetdicom would drop, else let it serve the request.

        pynetdicom ignores a request missing a required element (an empty
        Affected SOP Instance UID is not even encoded), leaving the sender
        waiting for its own timeout; one with an invalid UID is answered here
        too, without echoing the UID.
        """
        if not isinstance(message, C_STORE) or (
            message.is_valid_request and is_valid_uid(str(message.AffectedSOPInstanceUID))
        ):
            serve(message, context_id)
            return
        calling_ae = assoc.requestor.ae_title
        reason = "C-STORE request without a valid Affected SOP Instance UID"
        self.counters.add("instances_failed")
        log.warning("rejected C-STORE from %s: %s", calling_ae, reason)
        audit_refusal(calling_ae, CANNOT_UNDERSTAND, "rejected", reason)
        response = C_STORE()
        response.MessageIDBeingRespondedTo = message.MessageID or 0
        if is_valid_uid(str(message.AffectedSOPClassUID or "")):
            response.AffectedSOPClassUID = message.AffectedSOPClassUID
        response.Status = CANNOT_UNDERSTAND
        assoc.dimse.send_msg(response, context_id)

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
        """Answer one C-STORE; never raise (pynetdicom's 0xC211 would go uncounted)."""
        calling_ae = event.assoc.requestor.ae_title
        try:
            return self._store(event, calling_ae)
        except Exception as exc:
            self.counters.add("instances_failed")
            reason = f"internal error ({type(exc).__name__})"
            log.exception("C-STORE from %s failed: %s", calling_ae, reason)
            audit_refusal(calling_ae, PROCESSING_FAILURE, "failed", reason)
            return PROCESSING_FAILURE

    def _store(self, event: Event, calling_ae: str) -> int:
        request: Any = event.request
        refusal = check_request(
            str(request.AffectedSOPClassUID or ""),
            str(request.AffectedSOPInstanceUID or ""),
            str(event.context.abstract_syntax),
        )
        if refusal is not None:
            status, reason = refusal
            self.counters.add("instances_failed")
            log.warning("rejected C-STORE from %s: %s", calling_ae, reason)
            audit_refusal(calling_ae, status, "rejected", reason)
            return status
        outcome = self.store.store(
            event.encoded_dataset(include_meta=False),
            str(event.context.transfer_syntax),
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            calling_ae,
        )
        if outcome.disposition in ("stored", "replaced"):
            self.counters.add("instances_stored")
            self.counters.add("bytes_stored", outcome.size)
        elif outcome.disposition in ("duplicate", "conflict_kept"):
            self.counters.add("instances_duplicate")
        else:
            self.counters.add("instances_failed")
        return outcome.status
