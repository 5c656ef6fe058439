"""``/v1/auth/api-keys``: secret API keys (docs.rymi.live/api/keys.html).

The plaintext of a new key is in the creation response and nowhere else: only its
SHA-256 hash is stored. Revoking takes effect on the next request (every request looks
the key up). A key may revoke itself.

The SDK's ``keys.create(kind, scopes, label)`` sends ``kind`` (``account`` or
``workspace``) and ``scopes``. This gateway has no workspaces and no scoped keys: every
secret key has full access to its account, so a request for narrower ``scopes`` is
refused (400) rather than silently granted more than it asked for; ``[]`` and ``["*"]``
mean full access.

``/v1/keys/publishable``: publishable keys (``sb_publishable_...``), each bound to one
agent, with the scoping docs.rymi.live/api/keys.html describes (``allowed_channels``
``web``/``phone``, default ``["web"]``; ``audience`` ``sdk``/``landing_demo``, default
``sdk``; an optional ``default_from_number``, which must be one of the account's
numbers). They are stored like secret keys (SHA-256 hash, plaintext shown once) and are
refused on every endpoint of this API (:mod:`gateway.api.auth`).
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.http import API_KEY, DIRECTORY, TENANT, iso_ms, json_response, read_json
from gateway.api.routes import Route
from gateway.api.schemas import (
    CreatedKey,
    CreatedPublishableKey,
    CreateKey,
    CreatePublishableKey,
    KeyList,
    KeyOut,
    KeyRevoked,
    Me,
    PublishableKeyList,
    PublishableKeyOut,
    Success,
)
from gateway.errors import NotFoundError, ValidationError
from gateway.store.models import ApiKey, KeyKind

__all__ = ["ROUTES"]


async def create_key(request: web.Request) -> web.Response:
    """Create a secret key; the response holds its plaintext, once."""
    body = await read_json(request, CreateKey)
    if any(scope != "*" for scope in body.scopes):
        raise ValidationError(
            "scopes", 'scoped keys are not supported: send [] or ["*"] (full access)'
        )
    created = await request.app[DIRECTORY].create_api_key(
        request[TENANT], KeyKind.SECRET, label=body.label
    )
    key = created.key
    result = CreatedKey(
        id=key.id,
        key=created.plaintext.reveal(),
        key_prefix=key.key_prefix,
        label=key.label,
        kind=body.kind,
        scopes=["*"],
        created_at=iso_ms(key.created_at_ms) or "",
    )
    return json_response(result, status=201)


async def list_keys(request: web.Request) -> web.Response:
    """The tenant's active secret keys (prefixes only)."""
    keys = await request.app[DIRECTORY].list_api_keys(request[TENANT])
    items = [
        KeyOut(
            id=k.id,
            key_prefix=k.key_prefix,
            label=k.label,
            last_used_at=iso_ms(k.last_used_at_ms),
            created_at=iso_ms(k.created_at_ms) or "",
        )
        for k in keys
        if k.kind is KeyKind.SECRET
    ]
    return json_response(KeyList(items))


async def revoke_key(request: web.Request) -> web.Response:
    """Revoke one of the tenant's keys, effective immediately."""
    key_id = request.match_info["key_id"]
    await request.app[DIRECTORY].revoke_api_key(request[TENANT], key_id)
    return json_response(KeyRevoked("revoked", key_id))


async def create_publishable_key(request: web.Request) -> web.Response:
    """Create a publishable key bound to one agent; the plaintext is in the response, once."""
    body = await read_json(request, CreatePublishableKey)
    directory, tenant = request.app[DIRECTORY], request[TENANT]
    if body.default_from_number is not None:
        numbers = {n.number for n in await directory.list_numbers(tenant)}
        if body.default_from_number not in numbers:
            raise ValidationError("default_from_number", "expected one of this account's numbers")
    created = await directory.create_api_key(
        tenant,
        KeyKind.PUBLISHABLE,
        label=body.label,
        agent_id=body.agent_id,
        allowed_channels=tuple(body.allowed_channels or ()),
        audience=body.audience,
        default_from_number=body.default_from_number,
    )
    key = created.key
    assert key.agent_id is not None
    assert key.audience is not None
    result = CreatedPublishableKey(
        id=key.id,
        key=created.plaintext.reveal(),
        key_prefix=key.key_prefix,
        agent_id=key.agent_id,
        label=key.label,
        allowed_channels=list(key.allowed_channels),
        audience=key.audience,
        default_from_number=key.default_from_number,
        created_at=iso_ms(key.created_at_ms) or "",
    )
    return json_response(result, status=201)


def _publishable_out(key: ApiKey) -> PublishableKeyOut:
    return PublishableKeyOut(
        id=key.id,
        key_prefix=key.key_prefix,
        agent_id=key.agent_id or "",
        label=key.label,
        allowed_channels=list(key.allowed_channels),
        audience=key.audience or "sdk",
        default_from_number=key.default_from_number,
        last_used_at=iso_ms(key.last_used_at_ms),
        created_at=iso_ms(key.created_at_ms) or "",
    )


async def list_publishable_keys(request: web.Request) -> web.Response:
    """The tenant's active publishable keys (prefixes only)."""
    keys = await request.app[DIRECTORY].list_api_keys(request[TENANT])
    items = [_publishable_out(k) for k in keys if k.kind is KeyKind.PUBLISHABLE]
    return json_response(PublishableKeyList(items))


async def revoke_publishable_key(request: web.Request) -> web.Response:
    """Revoke one of the tenant's publishable keys (a secret key's id is a 404 here)."""
    key_id = request.match_info["key_id"]
    directory, tenant = request.app[DIRECTORY], request[TENANT]
    keys = await directory.list_api_keys(tenant)
    if not any(k.id == key_id and k.kind is KeyKind.PUBLISHABLE for k in keys):
        raise NotFoundError(f"publishable key {key_id}: not found")
    await directory.revoke_api_key(tenant, key_id)
    return json_response(Success(True))


async def me(request: web.Request) -> web.Response:
    """The tenant and key making the request, and its carrier connection."""
    account = await request.app[DIRECTORY].carrier_account(request[TENANT])
    plivo = account is not None and account.carrier == "plivo"
    result = Me(
        id=request[TENANT],
        api_key_prefix=request[API_KEY].key_prefix,
        telephony_provider=None if account is None else account.carrier,  # type: ignore[arg-type]
        plivo_connected=plivo,
        plivo_account_name=account.account_name if plivo and account else None,
        plivo_account_country=account.account_country if plivo and account else None,
    )
    return json_response(result)


ROUTES = [
    Route("GET", "/auth/me", me, "The account behind this key", "keys", responses={200: Me}),
    Route(
        "POST",
        "/auth/api-keys",
        create_key,
        "Create a secret API key",
        "keys",
        body=CreateKey,
        responses={201: CreatedKey},
    ),
    Route("GET", "/auth/api-keys", list_keys, "List API keys", "keys", responses={200: KeyList}),
    Route(
        "DELETE",
        "/auth/api-keys/{key_id}",
        revoke_key,
        "Revoke an API key",
        "keys",
        responses={200: KeyRevoked},
    ),
    Route(
        "POST",
        "/keys/publishable",
        create_publishable_key,
        "Create a publishable key bound to an agent",
        "keys",
        body=CreatePublishableKey,
        responses={201: CreatedPublishableKey},
        errors=(404,),
    ),
    Route(
        "GET",
        "/keys/publishable",
        list_publishable_keys,
        "List publishable keys",
        "keys",
        responses={200: PublishableKeyList},
    ),
    Route(
        "DELETE",
        "/keys/publishable/{key_id}",
        revoke_publishable_key,
        "Revoke a publishable key",
        "keys",
        responses={200: Success},
    ),
]
