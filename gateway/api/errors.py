"""The API's one error middleware: every failure becomes ``{error, code, message?}``.

The body is the one the official SDKs read (``error`` a short title, ``code`` a stable
snake_case code, ``message`` the detail; docs.rymi.live/api/realtime.html shows the full
form). The gateway's exception tree (:mod:`gateway.errors`) is mapped here and only here:

===============================  ======  =============================
exception                        status  code
===============================  ======  =============================
ValidationError                  400     ``invalid_request``
AuthError                        401     its ``code``
CarrierApiError (rejected)       401     ``carrier_auth_failed``
NotFoundError                    404     ``not_found``
ConflictError                    409     ``conflict``
RateLimitedError                 429     its ``code`` (+ ``Retry-After``)
CarrierApiError (unreachable)    502     ``carrier_unavailable``
CoordinationUnavailable          503     ``coordination_unavailable``
StateError, SecretError          500     ``storage_error``
anything else                    500     ``internal_error``
===============================  ======  =============================

Messages of 5xx errors are generic: a database driver's message can quote values.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.api.http import api_error, retry_after_header
from gateway.errors import (
    AuthError,
    CarrierApiError,
    ConflictError,
    CoordinationUnavailable,
    NotFoundError,
    RateLimitedError,
    SecretError,
    StateError,
    ValidationError,
)

__all__ = ["error_middleware", "to_http"]

log = logging.getLogger("gateway.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REASONS = {
    404: ("Not found", "not_found"),
    405: ("Method not allowed", "method_not_allowed"),
    413: ("Payload too large", "payload_too_large"),
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception a handler raises into the API's JSON error body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        title, code = _REASONS.get(exc.status, (exc.reason, "http_error"))
        raise api_error(exc.status, code, title, headers=_kept_headers(exc)) from None
    except Exception as exc:
        raise to_http(exc, request) from None


def to_http(exc: Exception, request: web.Request) -> web.HTTPException:
    """The HTTP error for one of the gateway's exceptions."""
    if isinstance(exc, ValidationError):
        return api_error(400, "invalid_request", "Invalid request", str(exc))
    if isinstance(exc, AuthError):
        return api_error(401, exc.code, "Unauthorized", str(exc))
    if isinstance(exc, CarrierApiError) and exc.rejected:
        return api_error(401, "carrier_auth_failed", "Carrier rejected the credentials", str(exc))
    if isinstance(exc, NotFoundError):
        return api_error(404, "not_found", "Not found", _not_found(exc))
    if isinstance(exc, ConflictError):
        return api_error(409, "conflict", "Conflict", str(exc))
    if isinstance(exc, RateLimitedError):
        headers = retry_after_header(exc.retry_after)
        return api_error(429, exc.code, "Too many requests", str(exc), headers)
    if isinstance(exc, CarrierApiError):
        return api_error(502, "carrier_unavailable", "Carrier API unavailable", str(exc))
    if isinstance(exc, CoordinationUnavailable):
        log.warning("%s %s: coordination unavailable: %s", request.method, request.path, exc)
        return api_error(503, "coordination_unavailable", "Service unavailable")
    if isinstance(exc, StateError | SecretError):
        log.error("%s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
        return api_error(500, "storage_error", "Storage failure")
    log.exception("%s %s: unexpected error", request.method, request.path, exc_info=exc)
    return api_error(500, "internal_error", "Internal error")


def _not_found(exc: NotFoundError) -> str:
    # Store messages say "agent <id>: not found"; a tenant id must never leak from them.
    text = str(exc)
    return "not found" if text.startswith("tenant ") else text


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
