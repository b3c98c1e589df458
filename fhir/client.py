"""A polite FHIR R4 REST client: timeouts, retries with backoff, Bundle paging.

Searches are sent as ``POST [type]/_search`` with a form body (FHIR R4 §3.1.1.1):
search values such as a patient identifier then never appear in a URL, where
proxies and server access logs would record them.  Pages after the first are
fetched through the Bundle's ``next`` link, as the server wrote it.

Retries: connection errors, timeouts and the transient statuses 408, 429, 500,
502, 503, 504 are retried up to ``max_retries`` times, waiting the server's
``Retry-After`` when it gives one and ``backoff_seconds * 2**attempt`` otherwise
(capped).  Every write this package offers is conditional (idempotent), so a
retried write never duplicates a resource.  Checked httpx-retries and tenacity:
neither knows FHIR paging nor Retry-After dates better than these few lines,
and httpx's own ``retries`` only covers connection setup.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from icibenefit.errors import FhirError, FhirStatusError
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Never sleep longer than this for one retry, whatever Retry-After says.
MAX_RETRY_WAIT_SECONDS = 120.0
#: A server whose ``next`` links never end is broken; stop rather than loop forever.
MAX_PAGES = 10_000

SearchParams = Mapping[str, str | Sequence[str]]


class FhirClient:
    """Talk to one FHIR R4 server.

    Parameters
    ----------
    base_url
        The server's base, e.g. ``https://ehr.example.org/fhir/R4``.
    auth
        An :class:`httpx.Auth` (see :mod:`icibenefit.fhir.auth`) or ``None``.
    timeout
        Seconds for connecting and for each read.
    max_retries
        Retries after the first attempt for transient failures.
    page_size
        ``_count`` sent with every search unless the caller gives one.
    backoff_seconds, max_backoff_seconds
        First retry delay (doubling each attempt) and its cap, without Retry-After.
    transport
        An httpx transport; tests pass ``httpx.MockTransport``.
    sleep
        Called with the delay before each retry; injectable for fast unit tests.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: float = 15.0,
        max_retries: int = 5,
        page_size: int = 100,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0 or page_size < 1 or timeout <= 0 or backoff_seconds < 0:
            raise ValueError("max_retries >= 0, page_size >= 1, timeout > 0, backoff >= 0")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.page_size = page_size
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._sleep = sleep
        self._origin = httpx.URL(self.base_url).copy_with(path="/", query=None, fragment=None)
        install_url_redaction()
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            auth=auth,
            timeout=timeout,
            transport=transport,
            headers={"Accept": FHIR_JSON},
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, transport: httpx.BaseTransport | None = None
    ) -> FhirClient:
        """A client configured by ``fhir_*`` settings (base URL, auth, timeout, retries)."""
        from icibenefit.fhir.auth import auth_from_settings

        if settings.fhir_base_url is None:
            raise FhirError("fhir_base_url is not set")
        return cls(
            settings.fhir_base_url,
            auth=auth_from_settings(settings),
            timeout=settings.fhir_timeout_seconds,
            max_retries=settings.fhir_max_retries,
            page_size=settings.fhir_page_size,
            transport=transport,
        )

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # ------------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        url: str,
        *,
        params: SearchParams | None = None,
        json: Any = None,
        data: SearchParams | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request with retries; return a successful (< 400) response.

        Raises
        ------
        FhirStatusError
            For a non-transient error status, or a transient one after the last retry.
        FhirError
            When the server stays unreachable after the last retry.
        """
        what = describe(method, url)
        send_headers = dict(headers or {})
        if json is not None:
            send_headers.setdefault("Content-Type", FHIR_JSON)
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._http.request(
                    method,
                    url,
                    params=_as_dict(params),
                    json=json,
                    data=_as_dict(data),
                    headers=send_headers,
                )
            except httpx.TransportError as exc:
                if last:
                    raise FhirError(
                        f"FHIR server unreachable for {what} after {attempt + 1} attempts: "
                        f"{type(exc).__name__}"
                    ) from None
                delay = self._backoff(attempt)
                log.warning(
                    "FHIR %s failed (%s); retry %d/%d in %.1f s",
                    what,
                    type(exc).__name__,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                self._sleep(delay)
                continue
            if response.status_code < 400:
                return response
            if response.status_code not in RETRY_STATUSES or last:
                raise FhirStatusError(
                    f"FHIR {what} answered {response.status_code}: {_diagnostics(response)}",
                    response.status_code,
                )
            delay = self._retry_delay(response, attempt)
            log.warning(
                "FHIR %s answered %d; retry %d/%d in %.1f s",
                what,
                response.status_code,
                attempt + 1,
                self.max_retries,
                delay,
            )
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns/raises

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff_seconds * 2**attempt, self.max_backoff_seconds))

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is None:
            return self._backoff(attempt)
        return min(retry_after, MAX_RETRY_WAIT_SECONDS)

    # ------------------------------------------------------------------ FHIR interactions

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """``GET [type]/[id]``."""
        return _json(self.request("GET", f"{resource_type}/{resource_id}"))

    def search(self, resource_type: str, params: SearchParams) -> list[dict[str, Any]]:
        """Every resource of a search, following ``next`` links across all pages.

        Included resources (``_include``) are returned too; callers tell them
        apart by ``resourceType``.  ``_count`` defaults to the client's page size.
        """
        return [resource for page in self.search_pages(resource_type, params) for resource in page]

    def search_pages(
        self, resource_type: str, params: SearchParams
    ) -> Iterator[list[dict[str, Any]]]:
        """The resources of a search, one list per Bundle page."""
        form = {"_count": str(self.page_size), **params}
        bundle = _json(self.request("POST", f"{resource_type}/_search", data=form))
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            yield _bundle_resources(bundle)
            next_url = _next_link(bundle)
            if next_url is None:
                return
            if next_url in seen:
                raise FhirError(f"FHIR search of {resource_type}: the next link repeats")
            seen.add(next_url)
            self._check_same_origin(next_url)
            bundle = _json(self.request("GET", next_url))
        raise FhirError(f"FHIR search of {resource_type} exceeded {MAX_PAGES} pages")

    def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """POST a ``transaction`` (or ``batch``) Bundle to the base; return the response Bundle.

        Like every request it is retried on transient failures, so its entries
        should be idempotent (``PUT``, conditional create or update).
        """
        return _json(self.request("POST", "", json=dict(bundle)))

    def _check_same_origin(self, url: str) -> None:
        # A next link to another host would receive our bearer token: refuse it.
        target = httpx.URL(url)
        if target.is_absolute_url and (target.scheme, target.host, target.port) != (
            self._origin.scheme,
            self._origin.host,
            self._origin.port,
        ):
            raise FhirError("FHIR next link points to another server; refusing to follow it")


# ---------------------------------------------------------------------- helpers


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def describe(method: str, url: str) -> str:
    """``METHOD path`` with ids and query removed, safe to log."""
    return f"{method} {redact_url(httpx.URL(url))}"


def redact_url(url: httpx.URL) -> str:
    """A URL with the query and every resource id replaced, so no identifier leaks into logs.

    ``http://h/fhir/Patient/123/_history/4?identifier=x`` becomes
    ``http://h/fhir/Patient/*/_history/*?*``: the resource type and the
    interaction stay readable, values do not.
    """
    segments = url.path.split("/")
    redacted: list[str] = []
    after_type = False
    for segment in segments:
        if after_type and segment and not segment.startswith(("_", "$")):
            redacted.append("*")
        else:
            redacted.append(segment)
        after_type = after_type or segment[:1].isupper()
    path = "/".join(redacted)
    prefix = f"{url.scheme}://{url.netloc.decode()}" if url.is_absolute_url else ""
    return prefix + path + ("?*" if url.query else "")


class _RedactUrlFilter(logging.Filter):
    """Rewrite httpx's "HTTP Request: GET <url>" lines so they carry no query or id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


def install_url_redaction() -> None:
    """Attach the redacting filter to httpx's logger once (it logs full URLs at INFO)."""
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactUrlFilter) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactUrlFilter())


def _as_dict(params: SearchParams | None) -> dict[str, str | list[str]] | None:
    """Repeated parameters (``date=ge..&date=le..``) as lists, which httpx repeats."""
    if params is None:
        return None
    return {name: v if isinstance(v, str) else list(v) for name, v in params.items()}


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        raise FhirError(f"FHIR server returned non-JSON ({response.status_code})") from None
    if not isinstance(payload, dict):
        raise FhirError("FHIR server returned JSON that is not a resource")
    return payload


def _bundle_resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    if bundle.get("resourceType") != "Bundle":
        raise FhirError(f"expected a Bundle, got {bundle.get('resourceType')!r}")
    resources = []
    for entry in bundle.get("entry") or []:
        mode = (entry.get("search") or {}).get("mode", "match")
        resource = entry.get("resource")
        if mode == "outcome" or not isinstance(resource, dict):
            if resource is not None:
                log.warning("FHIR search returned an OperationOutcome: %s", _outcome_text(resource))
            continue
        resources.append(resource)
    return resources


def _next_link(bundle: Mapping[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _diagnostics(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.reason_phrase
    if isinstance(payload, dict) and payload.get("resourceType") == "OperationOutcome":
        return _outcome_text(payload)
    return response.reason_phrase


def _outcome_text(outcome: Mapping[str, Any]) -> str:
    texts = []
    for issue in outcome.get("issue") or []:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
        texts.append(str(text or issue.get("code", "?")))
    return "; ".join(texts) or "no details"
