"""Webhook endpoints and their deliveries, per tenant (SQL).

Secrets (16-256 characters, rymi-api.md 8.1) are sealed with the gateway's
:class:`~gateway.store.secrets.Keyring` under associated data bound to the tenant and the
endpoint (``webhook:<id>:secret``), so a ciphertext copied into another tenant's row does
not open. They are never returned. Sending a new secret *rotates* it: the old one moves
to the ``previous_*`` columns with an expiry (the rotation window), and deliveries carry a
signature under each until then (see :mod:`gateway.webhooks.events`).

Validation happens before any write; another tenant's endpoint or delivery is
:class:`~gateway.errors.NotFoundError`, exactly as if it did not exist.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import ConflictError, NotFoundError, ValidationError
from gateway.store.secrets import Keyring, Sealed, Secret
from gateway.store.sql import schema
from gateway.store.sql.engine import db_errors, read_tx, wall_clock_ms, write_tx
from gateway.webhooks.events import CATALOG
from gateway.webhooks.outbox import new_delivery_id

__all__ = ["Attempt", "Delivery", "Endpoint", "WebhookStore", "secret_field"]

SECRET_LENGTH = (16, 256)
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}$")
_D = schema.webhook_deliveries.c
_E = schema.webhook_endpoints.c


def secret_field(endpoint_id: str) -> str:
    """Associated-data field of an endpoint's secrets (current and previous)."""
    return f"webhook:{endpoint_id}:secret"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A registered endpoint (never with its secret)."""

    id: str
    tenant_id: str
    url: str
    events: tuple[str, ...]
    alert_email: str | None
    rotating_until_ms: int | None
    """End of the rotation window while the previous secret still signs, else None."""
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a delivery."""

    attempt: int
    started_at_ms: int
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to one endpoint, with its attempts."""

    id: str
    event_id: str
    event_type: str
    status: str
    attempts: list[Attempt]
    next_attempt_at_ms: int | None
    replay_of: str | None
    created_at_ms: int
    finished_at_ms: int | None


def validate_events(events: object) -> tuple[str, ...]:
    """A non-empty list of catalog names, deduplicated in order. Raises ValidationError."""
    if not isinstance(events, list | tuple) or not events or len(events) > 50:
        raise ValidationError("events", "expected 1-50 event names from the catalog")
    unknown = [e for e in events if not isinstance(e, str) or e not in CATALOG]
    if unknown:
        shown = ", ".join(repr(e)[:60] for e in unknown[:3])
        raise ValidationError("events", f"unknown event {shown}; see docs/webhooks.md")
    return tuple(dict.fromkeys(events))


def validate_secret(secret: object) -> str:
    """16-256 characters. Raises ValidationError (never echoing the value)."""
    low, high = SECRET_LENGTH
    if not isinstance(secret, str) or not low <= len(secret) <= high:
        raise ValidationError("secret", f"expected {low}-{high} characters")
    return secret


def validate_email(email: object) -> str | None:
    """None, or something shaped like an e-mail address. Raises ValidationError."""
    if email is None:
        return None
    if not isinstance(email, str) or len(email) > 254 or not _EMAIL_RE.fullmatch(email):
        raise ValidationError("alert_email", "expected an e-mail address")
    return email


class WebhookStore:
    """Endpoints and deliveries over one SQL engine.

    Args:
        engine: a migrated engine (the ledger's database: the outbox lives there).
        keyring: master keys sealing the endpoint secrets.
        clock: wall-clock milliseconds.
    """

    def __init__(
        self, engine: AsyncEngine, keyring: Keyring, clock: Callable[[], int] = wall_clock_ms
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.clock = clock

    async def create(
        self,
        tenant_id: str,
        url: str,
        events: Sequence[str],
        secret: str,
        alert_email: str | None = None,
    ) -> Endpoint:
        """Register an endpoint (``url`` already checked by :func:`~.urls.check_url`)."""
        names = validate_events(list(events))
        sealed_secret = validate_secret(secret)
        email = validate_email(alert_email)
        endpoint_id = "wh_" + secrets.token_hex(12)
        sealed = self.keyring.seal(sealed_secret, tenant_id, secret_field(endpoint_id))
        now = self.clock()
        values = {
            "id": endpoint_id,
            "tenant_id": tenant_id,
            "url": url,
            "events": json.dumps(list(names)),
            "alert_email": email,
            "secret_key_id": sealed.key_id,
            "secret_ciphertext": sealed.blob,
            "created_at_ms": now,
            "updated_at_ms": now,
        }
        with db_errors("create webhook"):
            async with write_tx(self.engine) as conn:
                tenant = sa.select(schema.tenants.c.id).where(schema.tenants.c.id == tenant_id)
                if (await conn.execute(tenant)).first() is None:
                    raise NotFoundError(f"tenant {tenant_id}: not found")
                await conn.execute(sa.insert(schema.webhook_endpoints).values(values))
                return await _endpoint(conn, tenant_id, endpoint_id, now)

    async def list_endpoints(
        self, tenant_id: str, limit: int = 50, offset: int = 0
    ) -> tuple[list[Endpoint], int]:
        """A page of the tenant's endpoints (oldest first) and their total."""
        where = _E.tenant_id == tenant_id
        query = (
            sa.select(schema.webhook_endpoints)
            .where(where)
            .order_by(_E.created_at_ms, _E.id)
            .limit(limit)
            .offset(offset)
        )
        total = sa.select(sa.func.count()).select_from(schema.webhook_endpoints).where(where)
        now = self.clock()
        with db_errors("list webhooks"):
            async with read_tx(self.engine) as conn:
                rows = (await conn.execute(query)).all()
                count = int((await conn.execute(total)).scalar_one())
        return [_endpoint_from(row, now) for row in rows], count

    async def get(self, tenant_id: str, endpoint_id: str) -> Endpoint:
        """One of the tenant's endpoints. Raises NotFoundError."""
        with db_errors("get webhook"):
            async with read_tx(self.engine) as conn:
                return await _endpoint(conn, tenant_id, endpoint_id, self.clock())

    async def update(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        rotation_window_ms: int,
        url: str | None = None,
        events: Sequence[str] | None = None,
        secret: str | None = None,
        alert_email: str | None = None,
    ) -> Endpoint:
        """Change some fields; a new ``secret`` rotates (the old one signs for the window)."""
        now = self.clock()
        values: dict[str, object] = {"updated_at_ms": now}
        if url is not None:
            values["url"] = url
        if events is not None:
            values["events"] = json.dumps(list(validate_events(list(events))))
        if alert_email is not None:
            values["alert_email"] = validate_email(alert_email)
        new_secret = None if secret is None else validate_secret(secret)
        with db_errors("update webhook"):
            async with write_tx(self.engine) as conn:
                row = await _endpoint_row(conn, tenant_id, endpoint_id)
                if new_secret is not None:
                    sealed = self.keyring.seal(new_secret, tenant_id, secret_field(endpoint_id))
                    values |= {
                        "secret_key_id": sealed.key_id,
                        "secret_ciphertext": sealed.blob,
                        "previous_secret_key_id": row.secret_key_id,
                        "previous_secret_ciphertext": row.secret_ciphertext,
                        "previous_secret_expires_at_ms": now + rotation_window_ms,
                    }
                await conn.execute(
                    sa.update(schema.webhook_endpoints).where(_E.id == endpoint_id).values(values)
                )
                return await _endpoint(conn, tenant_id, endpoint_id, now)

    async def delete(self, tenant_id: str, endpoint_id: str) -> None:
        """Delete an endpoint and its pending deliveries. Raises NotFoundError."""
        with db_errors("delete webhook"):
            async with write_tx(self.engine) as conn:
                await _endpoint_row(conn, tenant_id, endpoint_id)
                await conn.execute(sa.delete(schema.webhook_endpoints).where(_E.id == endpoint_id))

    def open_secret(self, tenant_id: str, endpoint_id: str, sealed: tuple[str, bytes]) -> Secret:
        """Open a sealed endpoint secret (current or previous). Raises SecretError."""
        return self.keyring.open(Sealed(*sealed), tenant_id, secret_field(endpoint_id))

    async def deliveries(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        limit: int = 50,
        offset: int = 0,
        status: str | None = None,
    ) -> tuple[list[Delivery], int]:
        """A page of the endpoint's deliveries (newest first) with their attempts."""
        ev, at = schema.webhook_events.c, schema.webhook_attempts.c
        where = [_D.endpoint_id == endpoint_id]
        if status is not None:
            where.append(_D.status == status)
        query = (
            sa.select(schema.webhook_deliveries, ev.type)
            .join(schema.webhook_events, ev.id == _D.event_id)
            .where(*where)
            .order_by(_D.created_at_ms.desc(), _D.id.desc())
            .limit(limit)
            .offset(offset)
        )
        total = sa.select(sa.func.count()).select_from(schema.webhook_deliveries).where(*where)
        with db_errors("list deliveries"):
            async with read_tx(self.engine) as conn:
                await _endpoint_row(conn, tenant_id, endpoint_id)
                rows = (await conn.execute(query)).all()
                count = int((await conn.execute(total)).scalar_one())
                ids = [row.id for row in rows]
                attempts = (
                    await conn.execute(
                        sa.select(schema.webhook_attempts)
                        .where(at.delivery_id.in_(ids))
                        .order_by(at.id)
                    )
                ).all()
        by_delivery: dict[str, list[Attempt]] = {str(i): [] for i in ids}
        for a in attempts:
            by_delivery[str(a.delivery_id)].append(
                Attempt(
                    a.attempt, a.started_at_ms, a.duration_ms, a.status_code, a.outcome, a.error
                )
            )
        return [_delivery_from(row, by_delivery[str(row.id)]) for row in rows], count

    async def replay(self, tenant_id: str, endpoint_id: str, delivery_id: str) -> tuple[str, str]:
        """Queue the delivery's event again to the endpoint: (new delivery id, event id).

        The event (id and body) is the same, so receivers see a duplicate they can drop.

        Raises:
            NotFoundError: no such endpoint or delivery for this tenant.
            ConflictError: the delivery is still pending (it will be attempted anyway).
        """
        now = self.clock()
        with db_errors("replay delivery"):
            async with write_tx(self.engine) as conn:
                await _endpoint_row(conn, tenant_id, endpoint_id)
                query = sa.select(_D.event_id, _D.status).where(
                    _D.id == delivery_id, _D.endpoint_id == endpoint_id
                )
                row = (await conn.execute(query)).first()
                if row is None:
                    raise NotFoundError(f"delivery {delivery_id}: not found")
                if row.status == "pending":
                    raise ConflictError(f"delivery {delivery_id}: still pending")
                new_id = new_delivery_id()
                await conn.execute(
                    sa.insert(schema.webhook_deliveries).values(
                        id=new_id,
                        event_id=row.event_id,
                        endpoint_id=endpoint_id,
                        status="pending",
                        attempts=0,
                        next_attempt_at_ms=now,
                        replay_of=delivery_id,
                        created_at_ms=now,
                    )
                )
        return new_id, str(row.event_id)

    async def pending_count(self) -> int:
        """Deliveries not yet delivered or dead-lettered (the outbox depth, all tenants)."""
        query = sa.select(sa.func.count()).where(_D.status == "pending")
        with db_errors("count outbox"):
            async with read_tx(self.engine) as conn:
                return int((await conn.execute(query)).scalar_one())


async def _endpoint_row(
    conn: AsyncConnection, tenant_id: str, endpoint_id: str
) -> sa.Row[tuple[object, ...]]:
    query = sa.select(schema.webhook_endpoints).where(
        _E.id == endpoint_id, _E.tenant_id == tenant_id
    )
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFoundError(f"webhook {endpoint_id}: not found")
    return row


async def _endpoint(conn: AsyncConnection, tenant_id: str, endpoint_id: str, now: int) -> Endpoint:
    return _endpoint_from(await _endpoint_row(conn, tenant_id, endpoint_id), now)


def _endpoint_from(row: sa.Row[tuple[object, ...]], now: int) -> Endpoint:
    m = row._mapping
    expires = m["previous_secret_expires_at_ms"]
    return Endpoint(
        id=str(m["id"]),
        tenant_id=str(m["tenant_id"]),
        url=str(m["url"]),
        events=tuple(json.loads(str(m["events"]))),
        alert_email=m["alert_email"],
        rotating_until_ms=int(expires) if expires is not None and expires > now else None,
        created_at_ms=int(m["created_at_ms"]),
        updated_at_ms=int(m["updated_at_ms"]),
    )


def _delivery_from(row: sa.Row[tuple[object, ...]], attempts: list[Attempt]) -> Delivery:
    m = row._mapping
    pending = m["status"] == "pending"
    return Delivery(
        id=str(m["id"]),
        event_id=str(m["event_id"]),
        event_type=str(m["type"]),
        status=str(m["status"]),
        attempts=attempts,
        next_attempt_at_ms=int(m["next_attempt_at_ms"]) if pending else None,
        replay_of=m["replay_of"],
        created_at_ms=int(m["created_at_ms"]),
        finished_at_ms=m["finished_at_ms"],
    )
