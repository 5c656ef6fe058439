"""Authentication and request rate limits of the API (one middleware).

* ``Authorization: Bearer <key>``. Secret keys (``rymi_...``) may call every data
  endpoint. Publishable keys (``sb_publishable_...``, legacy ``rymi_pk_...``) are
  frontend keys that may only start calls (docs.rymi.live/api/keys.html), so every
  endpoint here answers them 401 ``publishable_key_not_allowed``, without a lookup.
* The key is looked up by its SHA-256 hash on every request, so a revoked key stops
  working at once (no cache to expire).
* Two fixed-window limits per minute, kept in the coordination backend so they hold
  across a fleet: per key and per tenant (docs.rymi.live/api/: "per tenant, per API
  key"); over either, 429 with ``Retry-After``. When the backend is unreachable the
  request goes through: a request limiter that fails closed would take the whole API
  down with Redis, while admission of calls (which costs money) does fail closed.
* Admin endpoints take the operator's token instead (compared in constant time).
"""

from __future__ import annotations

import enum
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.api.http import API_KEY, COORDINATION, DIRECTORY, TENANT
from gateway.api.settings import ApiSettings
from gateway.errors import AuthError, CoordinationUnavailable, NotFoundError, RateLimitedError
from gateway.store.models import KeyKind

__all__ = ["AUTH_OF", "LAST_TOUCH", "SETTINGS", "Auth", "auth_middleware"]

log = logging.getLogger("gateway.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SETTINGS = web.AppKey("api_settings", ApiSettings)
LAST_TOUCH = web.AppKey("last_touch", dict[str, float])

_PUBLISHABLE_PREFIXES = ("sb_publishable_", "rymi_pk_")


class Auth(enum.Enum):
    """Who may call a route."""

    NONE = "none"
    SECRET = "secret"  # noqa: S105 - an access level, not a password
    ADMIN = "admin"


AUTH_OF = web.AppKey("auth_of", dict[object, Auth])
"""Each handler's authentication (filled from the route table)."""


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, rate-limit, then call the handler."""
    match = request.match_info
    if match.http_exception is not None:
        raise match.http_exception
    auth = request.app[AUTH_OF].get(match.handler, Auth.SECRET)
    if auth is Auth.SECRET:
        await _authenticate(request)
    elif auth is Auth.ADMIN:
        _authenticate_admin(request)
    return await handler(request)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("send Authorization: Bearer <secret key>", code="missing_api_key")
    return token.strip()


async def _authenticate(request: web.Request) -> None:
    token = _bearer(request)
    if token.startswith(_PUBLISHABLE_PREFIXES):
        raise AuthError(
            "publishable keys can only start calls; use a secret key (rymi_...)",
            code="publishable_key_not_allowed",
        )
    try:
        key = await request.app[DIRECTORY].authenticate(token)
    except NotFoundError:
        raise AuthError("no active API key matches", code="invalid_api_key") from None
    if key.kind is not KeyKind.SECRET:
        raise AuthError("a secret key (rymi_...) is required", code="publishable_key_not_allowed")
    request[API_KEY] = key
    request[TENANT] = key.tenant_id
    await _limit(request, key.id, key.tenant_id)
    await _touch(request, key.id)


async def _limit(request: web.Request, key_id: str, tenant_id: str) -> None:
    settings = request.app[SETTINGS]
    coordination = request.app[COORDINATION]
    limits = (
        (f"api:key:{key_id}", settings.requests_per_minute_per_key, "this API key"),
        (f"api:tenant:{tenant_id}", settings.requests_per_minute_per_tenant, "this account"),
    )
    for name, limit, whose in limits:
        try:
            decision = await coordination.hit(name, limit=limit, window=60.0)
        except CoordinationUnavailable as exc:
            log.warning("request rate limit not checked (coordination unavailable): %s", exc)
            return
        if not decision.allowed:
            raise RateLimitedError(
                f"more than {limit} requests per minute for {whose}",
                retry_after=decision.reset_after,
            )


async def _touch(request: web.Request, key_id: str) -> None:
    # last_used_at is coarse on purpose: one write per key per resolution period and
    # process, not one per request (the write would serialize every request on SQLite).
    touched = request.app[LAST_TOUCH]
    now = time.monotonic()
    if now - touched.get(key_id, -1e9) < request.app[SETTINGS].last_used_resolution_s:
        return
    touched[key_id] = now
    await request.app[DIRECTORY].touch_api_key(key_id, time.time_ns() // 1_000_000)


def _authenticate_admin(request: web.Request) -> None:
    expected = request.app[SETTINGS].admin_token
    if expected is None:
        raise AuthError("the admin API is disabled (no admin token)", code="admin_disabled")
    token = _bearer(request)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise AuthError("wrong admin token", code="invalid_admin_token")
