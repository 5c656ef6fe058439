"""The route table and the OpenAPI 3.1 document generated from it.

Each :class:`Route` names its handler, who may call it, and the msgspec types of its
query, body and responses. :func:`openapi_document` turns the table plus those types
(:func:`msgspec.json.schema_components`) into the document served at
``/v1/openapi.json``; there is no hand-written copy to drift from the handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from gateway import __version__
from gateway.api.auth import Auth
from gateway.api.schemas import ErrorBody

__all__ = ["Route", "openapi_document"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REF = "#/components/schemas/{name}"
_ERROR_TITLES = {
    400: "Invalid request (the message names the field and the expected shape)",
    401: "Missing, unknown, revoked or publishable API key",
    402: "Balance depleted; top up first",
    404: "No such object in this account",
    409: "Conflict",
    413: "Body too large",
    429: "Too many requests; see Retry-After",
    500: "Internal or storage failure",
    501: "Not supported by this gateway or carrier",
    502: "The carrier's API could not be reached or refused the request",
    503: "Coordination backend unavailable",
}
_PATH_PARAMS = {
    "number": "E.164 number, raw (+14155550100) or URL-encoded (%2B14155550100)",
    "agent_id": "Agent id",
    "call_id": "Call id",
    "key_id": "API key id",
    "tenant_id": "Tenant id",
    "webhook_id": "Webhook id (wh_...)",
    "delivery_id": "Delivery id (dlv_...)",
}


@dataclass(frozen=True)
class Route:
    """One operation of the API.

    Attributes:
        method: HTTP method.
        path: path below ``/v1``, aiohttp/OpenAPI syntax (``/numbers/{number}``).
        handler: the aiohttp handler.
        summary: one line for the document.
        tag: group in the document.
        auth: who may call it.
        body: request body type, if any.
        query: query parameters type, if any.
        responses: success status -> response type.
        errors: error statuses besides the ones implied (401/429 for auth, 400 for
            bodies and queries, 404 for path parameters, 500 always).
    """

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: Auth = Auth.SECRET
    body: type | None = None
    query: type | None = None
    responses: Mapping[int, type] = field(default_factory=dict)
    errors: tuple[int, ...] = ()

    def error_statuses(self) -> list[int]:
        """Every error status this operation can answer with."""
        statuses = {500, *self.errors}
        if self.auth is not Auth.NONE:
            statuses |= {401, 429} if self.auth is Auth.SECRET else {401}
        if self.body is not None:
            statuses |= {400, 413}
        if self.query is not None or "{" in self.path:
            statuses |= {400, 404} if "{" in self.path else {400}
        if self.auth is Auth.SECRET:
            statuses.add(503)  # coordination backend down (rate limiter, call commands)
        return sorted(statuses)


def openapi_document(routes: Iterable[Route], base_path: str = "/v1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``."""
    routes = list(routes)
    types: list[Any] = [ErrorBody]
    for route in routes:
        types += [t for t in (route.body, *route.responses.values()) if t is not None]
    _, components = msgspec.json.schema_components(types, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for route in routes:
        op = _operation(route)
        if op["operationId"] in seen:  # one handler on two methods (PUT and PATCH)
            op["operationId"] += f"_{route.method.lower()}"
        seen.add(op["operationId"])
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rymi-gateway API",
            "version": __version__,
            "description": "Tenant API of the self-hosted gateway (see docs/api.md).",
        },
        "servers": [{"url": base_path}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "secretKey": {"type": "http", "scheme": "bearer", "description": "rymi_..."},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "operator"},
            },
        },
    }


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": _responses(route),
    }
    params = _path_parameters(route.path) + _query_parameters(route.query)
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    if route.auth is Auth.NONE:
        op["security"] = []
    else:
        op["security"] = [{"secretKey" if route.auth is Auth.SECRET else "adminToken": []}]
    return op


def _responses(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, type_ in route.responses.items():
        responses[str(status)] = {
            "description": type_.__doc__.splitlines()[0] if type_.__doc__ else "OK",
            "content": {"application/json": {"schema": _ref(type_)}},
        }
    error = {"application/json": {"schema": _ref(ErrorBody)}}
    for status in route.error_statuses():
        responses[str(status)] = {"description": _ERROR_TITLES[status], "content": error}
    if route.auth is Auth.SECRET or 429 in route.errors:
        responses["429"]["headers"] = {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}
        }
    return responses


def _ref(type_: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=type_.__name__)}


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": _PATH_PARAMS[name],
            "schema": {"type": "string", "minLength": 1, "maxLength": 64},
        }
        for name in names
    ]


def _query_parameters(query: type | None) -> list[dict[str, Any]]:
    if query is None:
        return []
    _, components = msgspec.json.schema_components([query], ref_template=_REF)
    struct = components[query.__name__]
    required = set(struct.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": _not_null(prop)}
        for name, prop in struct["properties"].items()
    ]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    # A query parameter is absent or text, never JSON null: drop msgspec's null branch.
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [option for option in options if option != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}
