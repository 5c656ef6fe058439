"""HTTP plumbing shared by the API handlers: typed app/request keys, JSON in and out.

Bodies are decoded straight into the msgspec structs of :mod:`gateway.api.schemas`, so
the type that documents a request in the OpenAPI document is the one that validates it.
A malformed body is a 400 naming the JSON path msgspec reports (``$.agent_id``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from gateway.store.coordination import Coordination
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.models import ApiKey

__all__ = [
    "API_KEY",
    "COORDINATION",
    "DIRECTORY",
    "LEDGER",
    "TENANT",
    "api_error",
    "iso_ms",
    "json_response",
    "read_json",
    "read_query",
]

MAX_BODY_BYTES = 65_536
"""Largest JSON body the API reads; agents' extra fields are capped at 16 KiB anyway."""

DIRECTORY = web.AppKey("directory", Directory)
LEDGER = web.AppKey("ledger", Ledger)
COORDINATION = web.AppKey("coordination", Coordination)
TENANT = web.RequestKey("tenant_id", str)
"""The authenticated tenant of a request (set by the auth middleware)."""
API_KEY = web.RequestKey("api_key", ApiKey)
"""The key that authenticated the request."""

_T = TypeVar("_T")
_JSON = "application/json"


def api_error(
    status: int,
    code: str,
    title: str,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.HTTPException:
    """An HTTP error carrying the API's error body ``{error, code, message?}``.

    Raise it from a handler; the error middleware passes it through unchanged.
    """
    body: dict[str, str] = {"error": title, "code": code}
    if message is not None:
        body["message"] = message
    exc = web.HTTPException(
        headers=headers, text=msgspec.json.encode(body).decode(), content_type=_JSON
    )
    exc.set_status(status)
    return exc


def json_response(body: Any, status: int = 200) -> web.Response:
    """Encode ``body`` (structs, dicts, lists) as a JSON response."""
    return web.Response(body=msgspec.json.encode(body), status=status, content_type=_JSON)


async def read_json(request: web.Request, type_: type[_T]) -> _T:
    """Decode the request body into ``type_``; an empty body counts as ``{}``.

    Raises:
        web.HTTPException: 413 for a body over :data:`MAX_BODY_BYTES`, 400 when it is not
            JSON of the expected shape (the message names the JSON path).
    """
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise api_error(413, "payload_too_large", "Payload too large", _too_large())
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise api_error(413, "payload_too_large", "Payload too large", _too_large())
    try:
        return msgspec.json.decode(raw or b"{}", type=type_)
    except msgspec.ValidationError as exc:
        raise api_error(400, "invalid_request", "Invalid request", str(exc)) from None
    except msgspec.DecodeError:
        raise api_error(400, "invalid_json", "Invalid JSON", "the body is not valid JSON") from None


def read_query(request: web.Request, type_: type[_T]) -> _T:
    """Convert the query string into ``type_`` (numbers parsed from text).

    Raises:
        web.HTTPException: 400 naming the parameter.
    """
    try:
        return msgspec.convert(dict(request.query), type=type_, strict=False)
    except msgspec.ValidationError as exc:
        raise api_error(400, "invalid_request", "Invalid request", str(exc)) from None


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds (``2026-11-21T06:26:09.123Z``)."""
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def retry_after_header(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header: whole seconds, rounded up, at least 1 (RFC 9110 10.2.3)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _too_large() -> str:
    return f"expected a JSON body of at most {MAX_BODY_BYTES} bytes"
