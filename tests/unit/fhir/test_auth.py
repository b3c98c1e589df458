import time
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from icibenefit.errors import ConfigurationError
from icibenefit.fhir.auth import (
    CLIENT_ASSERTION_TYPE,
    BearerAuth,
    SmartBackendAuth,
    auth_from_settings,
)
from icibenefit.fhir.client import FhirClient

BASE = "https://ehr.example.org/fhir"
TOKEN_URL = "https://auth.example.org/token"


def pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP384R1())


class FakeAuthServer:
    """A token endpoint that verifies the client assertion, plus a FHIR endpoint."""

    def __init__(self, public_key, algorithm, lifetime=300):
        self.public_key = public_key
        self.algorithm = algorithm
        self.lifetime = lifetime
        self.assertions = []
        self.issued = 0
        self.revoked = set()

    def __call__(self, request):
        if str(request.url) == TOKEN_URL:
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            assert form["grant_type"] == "client_credentials"
            assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
            assert form["scope"] == "system/*.read"
            claims = jwt.decode(
                form["client_assertion"],
                self.public_key,
                algorithms=[self.algorithm],
                audience=TOKEN_URL,
                leeway=600,  # the test clock runs ahead of real time
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
            header = jwt.get_unverified_header(form["client_assertion"])
            assert header["alg"] == self.algorithm
            self.assertions.append((claims, header))
            self.issued += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"tok-{self.issued}",
                    "token_type": "bearer",
                    "expires_in": self.lifetime,
                },
            )
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not token.startswith("tok-") or token in self.revoked:
            return httpx.Response(401)
        return httpx.Response(200, json={"resourceType": "Patient", "id": "x", "token": token})


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_smart_assertion_is_signed_and_token_cached_until_expiry(algorithm, rsa_key, ec_key):
    key = rsa_key if algorithm == "RS384" else ec_key
    server = FakeAuthServer(key.public_key(), algorithm, lifetime=300)
    now = [time.time()]
    auth = SmartBackendAuth(
        TOKEN_URL,
        "icibenefit-client",
        pem(key),
        algorithm,
        "system/*.read",
        key_id="k1",
        clock=lambda: now[0],
    )
    client = FhirClient(BASE, auth=auth, transport=httpx.MockTransport(server))

    assert client.read("Patient", "x")["token"] == "tok-1"
    claims, header = server.assertions[0]
    assert claims["iss"] == claims["sub"] == "icibenefit-client"
    assert claims["exp"] - now[0] <= 300
    assert claims["exp"] > now[0]
    assert header["kid"] == "k1"

    now[0] += 200  # still valid: cached, no new token request
    assert client.read("Patient", "x")["token"] == "tok-1"
    assert server.issued == 1

    now[0] += 100  # within the renewal margin of expiry: renewed
    assert client.read("Patient", "x")["token"] == "tok-2"
    assert server.issued == 2
    assert server.assertions[0][0]["jti"] != server.assertions[1][0]["jti"]


def test_smart_token_renewed_once_when_revoked(rsa_key):
    server = FakeAuthServer(rsa_key.public_key(), "RS384")
    auth = SmartBackendAuth(TOKEN_URL, "c", pem(rsa_key), "RS384", "system/*.read")
    client = FhirClient(BASE, auth=auth, transport=httpx.MockTransport(server))
    client.read("Patient", "x")
    server.revoked.add("tok-1")
    assert client.read("Patient", "x")["token"] == "tok-2"


def test_smart_rejects_a_key_that_does_not_fit_the_algorithm(rsa_key):
    with pytest.raises(ConfigurationError, match="ES384"):
        SmartBackendAuth(TOKEN_URL, "c", pem(rsa_key), "ES384")


def test_bearer_auth_sets_the_header():
    seen = []

    def handler(request):
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={"resourceType": "Patient"})

    FhirClient(BASE, auth=BearerAuth("s3cret"), transport=httpx.MockTransport(handler)).read(
        "Patient", "x"
    )
    assert seen == ["Bearer s3cret"]


def test_auth_from_settings(make_settings, tmp_path, ec_key):
    assert auth_from_settings(make_settings()) is None
    assert isinstance(
        auth_from_settings(make_settings(fhir_auth="bearer", fhir_token="t")), BearerAuth
    )
    with pytest.raises(ConfigurationError):
        auth_from_settings(make_settings(fhir_auth="bearer"))
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem(ec_key))
    smart = auth_from_settings(
        make_settings(
            fhir_auth="smart",
            fhir_smart_token_url=TOKEN_URL,
            fhir_smart_client_id="c",
            fhir_smart_private_key_file=key_file,
            fhir_smart_algorithm="ES384",
        )
    )
    assert isinstance(smart, SmartBackendAuth)
    assert smart.algorithm == "ES384"
    with pytest.raises(ConfigurationError):
        auth_from_settings(make_settings(fhir_auth="smart"))
