"""Access control with dcmtk's echoscu: AE titles, source addresses, TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from icibenefit.listener.scp import TLS_HANDSHAKE_SECONDS
from tests.integration.listener.server import echoscu

pytestmark = pytest.mark.integration


def test_calling_and_called_ae_titles_are_enforced(start_listener) -> None:
    server = start_listener(allowed_calling_ae_titles=["TESTSCU", "ORTHANC"])
    assert echoscu(server.port, calling_ae="TESTSCU").returncode == 0
    unknown = echoscu(server.port, calling_ae="INTRUDER")
    assert unknown.returncode != 0
    assert "Rejected" in unknown.stderr or "rejected" in unknown.stderr
    wrong_called = echoscu(server.port, calling_ae="TESTSCU", called_ae="SOMEONE")
    assert wrong_called.returncode != 0
    assert echoscu(server.port, calling_ae="ORTHANC").returncode == 0  # still serving
    assert "icibenefit_rejections_total 2" in server.metrics()
    assert "icibenefit_associations_total 2" in server.metrics()


def test_source_address_allow_list(start_listener) -> None:
    server = start_listener(allowed_source_addresses=["192.0.2.10"])
    assert echoscu(server.port).returncode != 0
    assert "refused connection from 127.0.0.1" in server.log()
    allowed = start_listener(allowed_source_addresses=["127.0.0.1"])
    assert echoscu(allowed.port).returncode == 0


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pki(directory: Path) -> dict[str, Path]:
    """A self-signed test CA and a server and a client certificate it signs."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("icibenefit test CA", ca_key, _name("icibenefit test CA"), ca_key, ca=True)
    paths = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(f"icibenefit {role}", key, ca_cert.subject, ca_key, ca=False)
        paths[f"{role}_cert"] = directory / f"{role}.pem"
        paths[f"{role}_key"] = directory / f"{role}.key"
        paths[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{role}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


def test_tls_association_works_and_plain_one_fails(start_listener, tmp_path: Path) -> None:
    pki = _write_pki(tmp_path)
    server = start_listener(
        tls_cert_file=pki["server_cert"],
        tls_key_file=pki["server_key"],
        tls_ca_file=pki["ca"],
        allowed_calling_ae_titles=["TESTSCU"],
    )
    tls = ["+tls", str(pki["client_key"]), str(pki["client_cert"]), "+cf", str(pki["ca"])]
    secured = echoscu(server.port, extra=tls)
    assert secured.returncode == 0, secured.stderr
    assert echoscu(server.port).returncode != 0  # plain DICOM to the TLS port
    (tmp_path / "other").mkdir()
    stranger = _write_pki(tmp_path / "other")
    untrusted = ["+tls", str(stranger["client_key"]), str(stranger["client_cert"])]
    untrusted += ["+cf", str(pki["ca"])]
    assert echoscu(server.port, extra=untrusted).returncode != 0  # client cert from another CA
    assert echoscu(server.port, extra=tls).returncode == 0  # and the server still serves

    # A peer that connects and stays silent must not block the accept loop forever.
    with socket.create_connection(("127.0.0.1", server.port)):
        started = time.monotonic()
        assert echoscu(server.port, extra=tls).returncode == 0
        assert time.monotonic() - started < TLS_HANDSHAKE_SECONDS + 5
