"""Idempotent writes for reporting: conditional create and conditional update.

A report may be sent twice (a retried job, a retried request after a lost
answer).  Both writes are keyed on a business identifier, so the second send
finds the first resource instead of creating a duplicate:

* :func:`create_or_get` - ``POST [type]`` with ``If-None-Exist: identifier=s|v``
  (FHIR R4 3.1.0.8.1): creates once, returns the existing resource afterwards;
* :func:`update_conditional` - ``PUT [type]?identifier=s|v`` (FHIR R4 3.1.0.4.3):
  creates or replaces the one resource carrying the identifier.

Resources are validated with fhir.resources (R4B models) before they are sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from icibenefit.errors import FhirError
from icibenefit.fhir.client import FhirClient
from icibenefit.fhir.readers import escape_search_value

ResourceLike = Resource | dict[str, Any]


@dataclass(frozen=True)
class WriteResult:
    """The resource as the server stored it, and whether this call created it."""

    resource: dict[str, Any]
    created: bool

    @property
    def reference(self) -> str:
        """``<type>/<id>`` for use in other resources' references."""
        return f"{self.resource['resourceType']}/{self.resource['id']}"


def validated(resource: ResourceLike) -> dict[str, Any]:
    """The resource as FHIR JSON after validation against its R4B model.

    Raises
    ------
    FhirError
        When the resource is not a valid FHIR R4 resource (names the failing elements).
    """
    model: Resource
    if isinstance(resource, Resource):
        model = resource
    else:
        try:
            cls = get_fhir_model_class(str(resource.get("resourceType")))
        except KeyError:
            raise FhirError(f"unknown resourceType {resource.get('resourceType')!r}") from None
        try:
            model = cast(Resource, cls.model_validate(resource))
        except ValidationError as exc:
            fields = sorted({".".join(map(str, e["loc"])) for e in exc.errors()})
            raise FhirError(f"invalid {cls.get_resource_type()}: {', '.join(fields)}") from None
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _identifier_query(resource: dict[str, Any], identifier: tuple[str, str] | None) -> str:
    if identifier is None:
        for candidate in resource.get("identifier") or []:
            if candidate.get("system") and candidate.get("value"):
                identifier = (candidate["system"], candidate["value"])
                break
    if identifier is None:
        raise FhirError(
            f"{resource['resourceType']} needs an identifier with system and value "
            "for an idempotent write"
        )
    system, value = identifier
    return f"identifier={system}|{escape_search_value(value)}"


def create_or_get(
    client: FhirClient, resource: ResourceLike, identifier: tuple[str, str] | None = None
) -> WriteResult:
    """Create ``resource`` unless one with the same business identifier exists.

    Parameters
    ----------
    client
        The FHIR client.
    resource
        The resource to create (a fhir.resources model or FHIR JSON).
    identifier
        ``(system, value)`` to match on; defaults to the resource's first identifier.

    Raises
    ------
    FhirStatusError
        412 when several resources already carry the identifier.
    """
    body = validated(resource)
    query = _identifier_query(body, identifier)
    response = client.request(
        "POST", body["resourceType"], json=body, headers={"If-None-Exist": query}
    )
    created = response.status_code == 201
    stored = _stored(client, body["resourceType"], query, response)
    return WriteResult(stored, created)


def update_conditional(
    client: FhirClient, resource: ResourceLike, identifier: tuple[str, str] | None = None
) -> WriteResult:
    """Create or replace the one resource carrying ``resource``'s business identifier.

    The body must not carry an id the server did not assign: the server picks
    the matching resource (or a new id), so the id is dropped before sending.

    Raises
    ------
    FhirStatusError
        412 when several resources carry the identifier.
    """
    body = validated(resource)
    body.pop("id", None)
    query = _identifier_query(body, identifier)
    response = client.request("PUT", f"{body['resourceType']}?{query}", json=body)
    stored = _stored(client, body["resourceType"], query, response)
    return WriteResult(stored, response.status_code == 201)


def _stored(client: FhirClient, resource_type: str, query: str, response: Any) -> dict[str, Any]:
    """The stored resource: the response body, or searched for when there is none."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("resourceType") == resource_type:
        return payload
    name, _, value = query.partition("=")
    found = client.search(resource_type, {name: value})
    matches = [r for r in found if r.get("resourceType") == resource_type]
    if len(matches) != 1:
        raise FhirError(f"{resource_type} written but {len(matches)} found by its identifier")
    return matches[0]
