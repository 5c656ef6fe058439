"""API keys in the directory: creation, authentication, listing and revocation.

A key's plaintext is returned once, by :meth:`ApiKeyMixin.create_api_key`; only its
SHA-256 (:func:`hash_api_key`) is stored. Secret keys (``rymi_``) act for the whole
tenant; publishable keys (``sb_publishable_``, legacy ``rymi_pk_``) are bound to one
agent and scoped by channel, audience and caller ID (docs.rymi.live/api/keys.html).
Creating and revoking a key each enqueue a webhook event in the same transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import NotFoundError, ValidationError
from gateway.store import agents as agent_rows
from gateway.store.models import ApiKey, CreatedApiKey, KeyKind, validate_e164
from gateway.store.rows import checked_text, tenant_exists
from gateway.store.secrets import Secret
from gateway.store.sql import schema
from gateway.store.sql.engine import db_errors, read_tx, write_tx
from gateway.webhooks import events, outbox

__all__ = ["ApiKeyMixin", "hash_api_key"]

_KEY_PREFIXES = {KeyKind.SECRET: "rymi_", KeyKind.PUBLISHABLE: "sb_publishable_"}
_LEGACY_PUBLISHABLE_PREFIX = "rymi_pk_"  # still accepted per docs.rymi.live/api/keys.html
_CHANNELS = ("web", "phone")
_AUDIENCES = ("sdk", "landing_demo")


def hash_api_key(plaintext: str) -> str:
    """The stored form of an API key: SHA-256 of the whole key, hex."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


class ApiKeyMixin:
    """API key methods of :class:`~gateway.store.directory.Directory`."""

    engine: AsyncEngine
    clock: Callable[[], int]

    async def create_api_key(
        self,
        tenant_id: str,
        kind: KeyKind = KeyKind.SECRET,
        label: str | None = None,
        agent_id: str | None = None,
        *,
        allowed_channels: tuple[str, ...] = (),
        audience: str | None = None,
        default_from_number: str | None = None,
    ) -> CreatedApiKey:
        """Create a key; its plaintext is in the result and nowhere else, ever.

        A publishable key must name one of the tenant's agents; a secret key must not.
        ``allowed_channels`` (default ``("web",)``), ``audience`` (default ``sdk``) and
        ``default_from_number`` scope publishable keys (docs.rymi.live/api/keys.html).
        """
        kind = _key_kind(kind)
        if (kind is KeyKind.PUBLISHABLE) != (agent_id is not None):
            raise ValidationError(
                "agent_id", "required for publishable keys, not allowed for secret keys"
            )
        scoping = _publishable_scope(kind, allowed_channels, audience, default_from_number)
        label = None if label is None else checked_text("label", label, 100)
        plaintext = _KEY_PREFIXES[kind] + secrets.token_urlsafe(32)
        key = ApiKey(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            kind=kind,
            key_prefix=plaintext[: len(_KEY_PREFIXES[kind]) + 6],
            label=label,
            agent_id=agent_id,
            created_at_ms=self.clock(),
            revoked_at_ms=None,
            **scoping,
        )
        with db_errors("create api key"):
            async with write_tx(self.engine) as conn:
                await tenant_exists(conn, tenant_id)
                if agent_id is not None:
                    await agent_rows.agent_row(conn, tenant_id, agent_id)
                values = {**_key_values(key), "key_hash": hash_api_key(plaintext)}
                await conn.execute(sa.insert(schema.api_keys).values(values))
                await _key_event(conn, "system.api_key_created", key, key.created_at_ms)
        return CreatedApiKey(key, Secret(plaintext))

    async def authenticate(self, plaintext: str) -> ApiKey:
        """The active key matching ``plaintext``. Raises NotFoundError (never says why)."""
        if not plaintext.startswith((*_KEY_PREFIXES.values(), _LEGACY_PUBLISHABLE_PREFIX)):
            raise NotFoundError("api key: no such active key")
        table = schema.api_keys
        query = sa.select(table).where(
            table.c.key_hash == hash_api_key(plaintext), table.c.revoked_at_ms.is_(None)
        )
        with db_errors("authenticate"):
            async with read_tx(self.engine) as conn:
                row = (await conn.execute(query)).first()
        if row is None:
            raise NotFoundError("api key: no such active key")
        return _key_from(row)

    async def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        """The tenant's active keys (hashes are never returned), oldest first."""
        table = schema.api_keys
        query = (
            sa.select(table)
            .where(table.c.tenant_id == tenant_id, table.c.revoked_at_ms.is_(None))
            .order_by(table.c.created_at_ms)
        )
        with db_errors("list api keys"):
            async with read_tx(self.engine) as conn:
                await tenant_exists(conn, tenant_id)
                return [_key_from(row) for row in (await conn.execute(query)).all()]

    async def touch_api_key(self, key_id: str, at_ms: int) -> None:
        """Record that the key authenticated a request at ``at_ms`` (never moves back)."""
        table = schema.api_keys
        stmt = (
            sa.update(table)
            .where(table.c.id == key_id)
            .where(sa.or_(table.c.last_used_at_ms.is_(None), table.c.last_used_at_ms < at_ms))
            .values(last_used_at_ms=at_ms)
        )
        with db_errors("touch api key"):
            async with write_tx(self.engine) as conn:
                await conn.execute(stmt)

    async def revoke_api_key(self, tenant_id: str, key_id: str) -> None:
        """Revoke one of the tenant's keys. Raises NotFoundError."""
        table = schema.api_keys
        stmt = (
            sa.update(table)
            .where(table.c.id == key_id, table.c.tenant_id == tenant_id)
            .where(table.c.revoked_at_ms.is_(None))
            .values(revoked_at_ms=self.clock())
            .returning(*table.c)
        )
        with db_errors("revoke api key"):
            async with write_tx(self.engine) as conn:
                row = (await conn.execute(stmt)).first()
                if row is None:
                    raise NotFoundError(f"api key {key_id}: not found")
                key = _key_from(row)
                await _key_event(conn, "system.api_key_revoked", key, key.revoked_at_ms or 0)


# -- webhook events (written in the cause's transaction: gateway/webhooks/outbox.py) --


async def _key_event(conn: AsyncConnection, event_type: str, key: ApiKey, at_ms: int) -> None:
    data = events.api_key_event(key.id, key.key_prefix, key.kind.value, key.label)
    await outbox.enqueue(conn, key.tenant_id, event_type, data, at_ms)


# -- row helpers -----------------------------------------------------------------


def _key_values(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "tenant_id": key.tenant_id,
        "kind": key.kind.value,
        "key_prefix": key.key_prefix,
        "label": key.label,
        "agent_id": key.agent_id,
        "created_at_ms": key.created_at_ms,
        "revoked_at_ms": key.revoked_at_ms,
        "allowed_channels": ",".join(key.allowed_channels) or None,
        "audience": key.audience,
        "default_from_number": key.default_from_number,
    }


def _key_from(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        tenant_id=m["tenant_id"],
        kind=KeyKind(m["kind"]),
        key_prefix=m["key_prefix"],
        label=m["label"],
        agent_id=m["agent_id"],
        created_at_ms=m["created_at_ms"],
        revoked_at_ms=m["revoked_at_ms"],
        last_used_at_ms=m["last_used_at_ms"],
        allowed_channels=tuple(m["allowed_channels"].split(",")) if m["allowed_channels"] else (),
        audience=m["audience"],
        default_from_number=m["default_from_number"],
    )


def _publishable_scope(
    kind: KeyKind, channels: tuple[str, ...], audience: str | None, from_number: str | None
) -> dict[str, Any]:
    """The scoping fields of a new key, checked (publishable keys only)."""
    if kind is not KeyKind.PUBLISHABLE:
        if channels or audience is not None or from_number is not None:
            raise ValidationError("allowed_channels", "only publishable keys are scoped")
        return {}
    chosen = tuple(dict.fromkeys(channels or ("web",)))
    if not set(chosen) <= set(_CHANNELS):
        raise ValidationError("allowed_channels", f"expected a subset of {list(_CHANNELS)}")
    audience = audience or "sdk"
    if audience not in _AUDIENCES:
        raise ValidationError("audience", f"expected one of {', '.join(_AUDIENCES)}")
    if from_number is not None:
        validate_e164(from_number, "default_from_number")
    return {
        "allowed_channels": chosen,
        "audience": audience,
        "default_from_number": from_number,
    }


def _key_kind(value: str) -> KeyKind:
    try:
        return KeyKind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in KeyKind)
        raise ValidationError("kind", f"expected one of {allowed}, got {value!r}") from None
