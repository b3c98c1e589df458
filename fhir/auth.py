"""Authentication to the FHIR server: none, a static bearer token, or SMART Backend Services.

Each scheme is an :class:`httpx.Auth`, so the client stays unaware of how it
authenticates and tests can drive the flows through ``httpx.MockTransport``.
SMART Backend Services (HL7 SMART App Launch 2.x, "Backend Services") is the
OAuth 2.0 client-credentials grant with a signed JWT client assertion: no
shared secret leaves the hospital's key store, only a short-lived signed token.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Literal

import httpx
import jwt

from icibenefit.errors import ConfigurationError, FhirError
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: SMART caps the assertion lifetime at five minutes.
ASSERTION_LIFETIME_SECONDS = 300
#: Renew a token this long before it expires, so a request never carries a stale one.
EXPIRY_MARGIN_SECONDS = 30.0


class BearerAuth(httpx.Auth):
    """A static bearer token, e.g. issued by the hospital for this service."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ConfigurationError("fhir_token is empty but fhir_auth is 'bearer'")
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Attach the token to every request."""
        request.headers["Authorization"] = self._header
        yield request


class SmartBackendAuth(httpx.Auth):
    """SMART Backend Services: a client-credentials token obtained with a signed JWT.

    The access token is cached until shortly before its ``expires_in`` and
    renewed then, or once when the server answers 401 (revoked early).  The
    token request goes through the same httpx client, so it shares its
    transport, timeouts and TLS settings.

    Parameters
    ----------
    token_url
        The authorization server's token endpoint (also the assertion's ``aud``).
    client_id
        The client id registered with the authorization server (``iss`` and ``sub``).
    private_key
        PEM private key matching the JWK set registered for ``client_id``.
    algorithm
        ``RS384`` or ``ES384``, the two algorithms SMART requires servers to support.
    scope
        The system scopes requested.
    key_id
        Optional ``kid`` header naming the key in the registered JWK set.
    clock
        Seconds since the epoch; injectable so tests can move time forward.
    """

    #: httpx reads every response before handing it back, so the token JSON is available.
    requires_response_body = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        private_key: str | bytes,
        algorithm: Literal["RS384", "ES384"] = "RS384",
        scope: str = "system/*.read",
        key_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in ("RS384", "ES384"):
            raise ConfigurationError(f"SMART algorithm must be RS384 or ES384, not {algorithm}")
        if not token_url or not client_id:
            raise ConfigurationError("SMART auth needs fhir_smart_token_url and client_id")
        self.token_url = token_url
        self.client_id = client_id
        self.algorithm = algorithm
        self.scope = scope
        self.key_id = key_id
        self._private_key = private_key
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        # Fail at start-up, not at the first fetch, when the key does not fit the algorithm.
        self.client_assertion()

    def client_assertion(self) -> str:
        """A fresh signed JWT authenticating this client to the token endpoint."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        headers = {"typ": "JWT"} | ({"kid": self.key_id} if self.key_id else {})
        try:
            return jwt.encode(claims, self._private_key, algorithm=self.algorithm, headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ConfigurationError(
                f"cannot sign a SMART client assertion with {self.algorithm}: {exc}"
            ) from None

    def _token_request(self) -> httpx.Request:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }
        return httpx.Request(
            "POST", self.token_url, data=form, headers={"Accept": "application/json"}
        )

    def _store_token(self, response: httpx.Response) -> str:
        if response.status_code != 200:
            raise FhirError(f"SMART token endpoint answered {response.status_code}")
        try:
            payload = response.json()
            token = str(payload["access_token"])
            lifetime = float(payload.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise FhirError("SMART token endpoint returned no usable access_token") from None
        self._token = token
        self._expires_at = self._clock() + lifetime - EXPIRY_MARGIN_SECONDS
        log.info("obtained a SMART access token valid for %.0f s", lifetime)
        return token

    def _valid_token(self) -> str | None:
        if self._token is not None and self._clock() < self._expires_at:
            return self._token
        return None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Attach a cached token, fetching it first when absent or expiring; renew once on 401."""
        with self._lock:
            token = self._valid_token()
        if token is None:
            token_response = yield self._token_request()
            with self._lock:
                token = self._store_token(token_response)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token_response = yield self._token_request()
            with self._lock:
                token = self._store_token(token_response)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


def auth_from_settings(settings: Settings) -> httpx.Auth | None:
    """The authentication the settings ask for (``None`` for ``fhir_auth = "none"``)."""
    if settings.fhir_auth == "none":
        return None
    if settings.fhir_auth == "bearer":
        if settings.fhir_token is None:
            raise ConfigurationError("fhir_auth is 'bearer' but fhir_token is not set")
        return BearerAuth(settings.fhir_token.get_secret_value())
    key_file = settings.fhir_smart_private_key_file
    if key_file is None or settings.fhir_smart_token_url is None:
        raise ConfigurationError(
            "fhir_auth is 'smart': set fhir_smart_token_url, fhir_smart_client_id and "
            "fhir_smart_private_key_file"
        )
    return SmartBackendAuth(
        token_url=settings.fhir_smart_token_url,
        client_id=settings.fhir_smart_client_id or "",
        private_key=_read_key(key_file),
        algorithm=settings.fhir_smart_algorithm,
        scope=settings.fhir_smart_scope,
    )


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read fhir_smart_private_key_file: {exc}") from None
