"""The webhook outbox in the ledger database: writing events, claiming and settling them.

Write side (reliability.md 3.2 item 4): :func:`enqueue` runs on the *caller's*
connection, inside the transaction that makes the event true (the final call record,
the new API key, the number assignment). It writes one ``webhook_events`` row (the
serialized, signed-over body) and one ``webhook_deliveries`` row per subscribed endpoint
(fan-out at write time), or nothing at all when no endpoint subscribes. A crash on either
side of the commit therefore neither loses nor invents an event.

Read side (the dispatcher, any instance): :func:`claim` leases due deliveries with one
conditional ``UPDATE ... RETURNING``. The inner ``SELECT`` carries ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL (rows another dispatcher is claiming are skipped, not waited on;
SQLite has no row locks and the clause compiles to nothing there), and the outer
``WHERE`` repeats the "not claimed" condition, so even a claimant that waited re-checks
the row and gets nothing. A claim increments ``attempts`` and sets ``claimed_until_ms``;
:func:`settle` records the attempt and moves the row on, only while the claim token still
matches. A dispatcher that dies mid-attempt leaves its lease to expire, and the row is
attempted again (the one way a duplicate happens; the event id is the same).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.models import CallRecord, TranscriptLine
from gateway.store.sql import schema
from gateway.webhooks.events import Event, balance_events, call_completed, make_event

__all__ = [
    "Claimed",
    "Outcome",
    "call_final_events",
    "claim",
    "enqueue",
    "new_delivery_id",
    "settle",
    "subscriptions",
]

_D = schema.webhook_deliveries.c
_E = schema.webhook_endpoints.c
_EV = schema.webhook_events.c
_BALANCE_EVENTS = frozenset({"billing.low_balance", "billing.balance_depleted"})


def new_delivery_id() -> str:
    """A fresh delivery id (``dlv_`` + 32 hex digits)."""
    return "dlv_" + secrets.token_hex(16)


_SUBSCRIPTIONS = sa.select(_E.id, _E.events).where(
    _E.tenant_id == sa.bindparam("tid", type_=_E.tenant_id.type)
)
"""Built once: every call's finalize asks it (the tenant's endpoints)."""


async def subscriptions(conn: AsyncConnection, tenant_id: str) -> dict[str, frozenset[str]]:
    """The tenant's endpoints and the event types each subscribes to."""
    rows = (await conn.execute(_SUBSCRIPTIONS, {"tid": tenant_id})).all()
    return {str(row.id): frozenset(json.loads(row.events)) for row in rows}


async def enqueue(
    conn: AsyncConnection, tenant_id: str, event_type: str, data: dict[str, Any], now_ms: int
) -> Event | None:
    """Write an event and its deliveries on ``conn`` (the cause's transaction).

    Returns the event, or None when no endpoint of the tenant subscribes to it.
    """
    subscribed = await subscriptions(conn, tenant_id)
    targets = sorted(endpoint for endpoint, types in subscribed.items() if event_type in types)
    if not targets:
        return None
    event = make_event(tenant_id, event_type, data, now_ms)
    await conn.execute(
        sa.insert(schema.webhook_events).values(
            id=event.id,
            tenant_id=tenant_id,
            type=event_type,
            body=event.body,
            created_at_ms=now_ms,
        )
    )
    await _insert_deliveries(conn, event.id, targets, now_ms)
    return event


async def _insert_deliveries(
    conn: AsyncConnection, event_id: str, endpoint_ids: Sequence[str], now_ms: int
) -> None:
    await conn.execute(
        sa.insert(schema.webhook_deliveries),
        [
            {
                "id": new_delivery_id(),
                "event_id": event_id,
                "endpoint_id": endpoint_id,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at_ms": now_ms,
                "created_at_ms": now_ms,
            }
            for endpoint_id in endpoint_ids
        ],
    )


async def call_final_events(conn: AsyncConnection, record: CallRecord, now_ms: int) -> None:
    """``call.completed`` and any billing alerts the call's debit crosses (same transaction).

    Called by :meth:`gateway.store.ledger.Ledger.finalize` right after the winner's debit.
    A tenant with no subscribing endpoint costs one indexed query and nothing else (the
    transcript and balance are only read when an event will be written).
    """
    wanted = frozenset().union(*(await subscriptions(conn, record.tenant_id)).values())
    if "call.completed" in wanted:
        t = schema.call_transcripts.c
        query = sa.select(t.speaker, t.text, t.at_ms).where(t.call_id == record.id).order_by(t.id)
        rows = await _all(conn, query)
        lines = [TranscriptLine(str(r.speaker), str(r.text), int(r.at_ms)) for r in rows]
        data = call_completed(record, lines)
        await enqueue(conn, record.tenant_id, "call.completed", data, now_ms)
    cost = record.cost_micros or 0
    if cost <= 0 or not wanted & _BALANCE_EVENTS:
        return
    a, lg = schema.billing_alerts.c, schema.ledger.c
    alerts = (
        await conn.execute(sa.select(a.thresholds_micros).where(a.tenant_id == record.tenant_id))
    ).first()
    thresholds = json.loads(alerts.thresholds_micros) if alerts is not None else []
    balance = sa.select(sa.func.coalesce(sa.func.sum(lg.amount_micros), 0)).where(
        lg.tenant_id == record.tenant_id
    )
    after = int((await conn.execute(balance)).scalar_one())
    for event_type, data in balance_events(after + cost, after, thresholds, record.id):
        await enqueue(conn, record.tenant_id, event_type, data, now_ms)


async def _all(conn: AsyncConnection, query: sa.Select[Any]) -> Sequence[sa.Row[Any]]:
    rows: Sequence[sa.Row[Any]] = (await conn.execute(query)).all()
    return rows


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this dispatcher holds the lease of, with what the attempt needs."""

    delivery_id: str
    attempt: int
    """1 for the first attempt (claims so far, this one included)."""
    token: str
    event_id: str
    event_type: str
    body: bytes
    created_at_ms: int
    endpoint_id: str
    tenant_id: str
    url: str
    alert_email: str | None
    secret: tuple[str, bytes]
    """(key id, ciphertext) of the current secret."""
    previous: tuple[str, bytes] | None
    """The previous secret while its rotation window is open, else None."""


async def claim(conn: AsyncConnection, now_ms: int, lease_ms: int, limit: int) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries to this caller (one claimant per row)."""
    token = secrets.token_hex(16)
    free = sa.or_(_D.claimed_until_ms.is_(None), _D.claimed_until_ms < now_ms)
    due = [_D.status == "pending", _D.next_attempt_at_ms <= now_ms, free]
    candidates = (
        sa.select(_D.id)
        .where(*due)
        .order_by(_D.next_attempt_at_ms)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        sa.update(schema.webhook_deliveries)
        .where(_D.id.in_(candidates), *due)
        .values(claimed_until_ms=now_ms + lease_ms, claim_token=token, attempts=_D.attempts + 1)
        .returning(_D.id, _D.attempts, _D.event_id, _D.endpoint_id, _D.created_at_ms)
    )
    claimed = (await conn.execute(stmt)).all()
    if not claimed:
        return []
    joined = schema.webhook_deliveries.join(schema.webhook_events, _EV.id == _D.event_id).join(
        schema.webhook_endpoints, _E.id == _D.endpoint_id
    )
    details = (
        sa.select(
            _D.id,
            _EV.type,
            _EV.body,
            _E.tenant_id,
            _E.url,
            _E.alert_email,
            _E.secret_key_id,
            _E.secret_ciphertext,
            _E.previous_secret_key_id,
            _E.previous_secret_ciphertext,
            _E.previous_secret_expires_at_ms,
        )
        .select_from(joined)
        .where(_D.id.in_([row.id for row in claimed]))
    )
    by_id = {row.id: row for row in await _all(conn, details)}
    result = []
    for row in claimed:
        info = by_id[row.id]
        previous = None
        expires = info.previous_secret_expires_at_ms
        if info.previous_secret_key_id is not None and expires is not None and expires > now_ms:
            previous = (str(info.previous_secret_key_id), bytes(info.previous_secret_ciphertext))
        result.append(
            Claimed(
                delivery_id=str(row.id),
                attempt=int(row.attempts),
                token=token,
                event_id=str(row.event_id),
                event_type=str(info.type),
                body=bytes(info.body),
                created_at_ms=int(row.created_at_ms),
                endpoint_id=str(row.endpoint_id),
                tenant_id=str(info.tenant_id),
                url=str(info.url),
                alert_email=info.alert_email,
                secret=(str(info.secret_key_id), bytes(info.secret_ciphertext)),
                previous=previous,
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to."""

    started_at_ms: int
    duration_ms: int
    status_code: int | None
    outcome: str
    """``success``, ``http_error``, ``timeout`` or ``network_error``."""
    error: str | None = None


async def settle(
    conn: AsyncConnection,
    claimed: Claimed,
    outcome: Outcome,
    *,
    next_attempt_at_ms: int | None,
    now_ms: int,
) -> str | None:
    """Record the attempt and move the delivery on; returns its new status.

    ``next_attempt_at_ms`` None means no attempt is left (a failure dead-letters).
    Returns None if the lease was lost meanwhile (another claimant owns the row now).
    """
    await conn.execute(
        sa.insert(schema.webhook_attempts).values(
            delivery_id=claimed.delivery_id,
            attempt=claimed.attempt,
            started_at_ms=outcome.started_at_ms,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            outcome=outcome.outcome,
            error=None if outcome.error is None else outcome.error[:200],
        )
    )
    values: dict[str, Any] = {
        "claimed_until_ms": None,
        "claim_token": None,
        "last_status_code": outcome.status_code,
        "last_error": None if outcome.error is None else outcome.error[:200],
    }
    if outcome.outcome == "success":
        values |= {"status": "delivered", "finished_at_ms": now_ms}
    elif next_attempt_at_ms is None:
        values |= {"status": "dead", "finished_at_ms": now_ms}
    else:
        values |= {"status": "pending", "next_attempt_at_ms": next_attempt_at_ms}
    stmt = (
        sa.update(schema.webhook_deliveries)
        .where(_D.id == claimed.delivery_id, _D.claim_token == claimed.token)
        .values(values)
    )
    if (await conn.execute(stmt)).rowcount != 1:
        return None
    return str(values["status"])
