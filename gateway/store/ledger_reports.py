"""Ledger reads for the public API: call pages, usage totals and spend-alert settings.

A mixin of :class:`~gateway.store.ledger.Ledger` (split out for size). Call pages are
newest first, ordered by ``(answered_at_ms DESC, id DESC)``; besides ``limit``/``offset``
they take an opaque *cursor* naming the last call of the previous page (keyset
pagination: pages stay stable while new calls arrive, and deep pages cost no scan).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import NotFoundError, ValidationError
from gateway.metering import Role
from gateway.store.models import BillingAlerts, CallRecord, CallStatus, Direction
from gateway.store.sql import schema
from gateway.store.sql.engine import db_errors, read_tx, write_tx

__all__ = ["CallPage", "LedgerReportsMixin", "Usage"]

MAX_PAGE = 200
"""Largest page of calls (docs.rymi.live/api/: ``limit`` at most 200)."""
_MAX_THRESHOLDS = 20
_MAX_THRESHOLD_MICROS = 10**12


@dataclass(frozen=True, slots=True)
class CallPage:
    """One page of a tenant's calls."""

    calls: list[CallRecord]
    total: int
    """Calls matching the filter (all pages)."""
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; None on the last page."""


@dataclass(frozen=True, slots=True)
class Usage:
    """A tenant's final calls since some time: count, billable units and cost."""

    calls: int
    billable_units: int
    """30 s units billed."""
    cost_micros: int


class LedgerReportsMixin:
    """Read models of :class:`~gateway.store.ledger.Ledger` for the API."""

    engine: AsyncEngine
    clock: Callable[[], int]

    async def page_calls(
        self,
        tenant_id: str,
        *,
        limit: int = 50,
        offset: int = 0,
        cursor: str | None = None,
        statuses: Sequence[CallStatus] | None = None,
    ) -> CallPage:
        """A page of the tenant's calls, newest first.

        Args:
            tenant_id: whose calls.
            limit: 1-200 calls per page.
            offset: calls to skip (after the cursor, if any).
            cursor: ``next_cursor`` of the previous page.
            statuses: only calls in these statuses (None: all).

        Raises:
            ValidationError: bad limit, offset or cursor.
        """
        if not 1 <= limit <= MAX_PAGE or not 0 <= offset <= 10**6:
            raise ValidationError("limit", f"expected limit 1-{MAX_PAGE} and offset 0-1000000")
        c = schema.calls.c
        where = [c.tenant_id == tenant_id]
        if statuses is not None:
            where.append(c.status.in_([CallStatus(s).value for s in statuses]))
        total_query = sa.select(sa.func.count()).select_from(schema.calls).where(*where)
        if cursor is not None:
            at_ms, call_id = _decode_cursor(cursor)
            where.append(
                sa.or_(c.answered_at_ms < at_ms, sa.and_(c.answered_at_ms == at_ms, c.id < call_id))
            )
        query = (
            sa.select(schema.calls)
            .where(*where)
            .order_by(c.answered_at_ms.desc(), c.id.desc())
            .offset(offset)
            .limit(limit + 1)  # one more tells whether there is a next page
        )
        with db_errors("page calls"):
            async with read_tx(self.engine) as conn:
                total = int((await conn.execute(total_query)).scalar_one())
                rows = (await conn.execute(query)).all()
        records = [_record(row) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = _encode_cursor(records[-1]) if more and records else None
        return CallPage(records, total, next_cursor)

    async def usage_since(self, tenant_id: str, since_ms: int) -> Usage:
        """Final calls of the tenant that ended at or after ``since_ms``, summed."""
        c = schema.calls.c
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(c.billable_units), 0),
            sa.func.coalesce(sa.func.sum(c.cost_micros), 0),
        ).where(c.tenant_id == tenant_id, c.status != "live", c.ended_at_ms >= since_ms)
        with db_errors("sum usage"):
            async with read_tx(self.engine) as conn:
                count, units, cost = (await conn.execute(query)).one()
        return Usage(int(count), int(units), int(cost))

    async def set_alerts(
        self,
        tenant_id: str,
        *,
        thresholds_micros: Sequence[int],
        low_balance_pct: int | None,
        email_enabled: bool,
    ) -> BillingAlerts:
        """Replace the tenant's spend-alert settings.

        Raises:
            ValidationError: a threshold is not a positive amount, or too many; the
                percentage is not 1-100.
            NotFoundError: no such tenant.
        """
        thresholds = _thresholds(thresholds_micros)
        pct: object = low_balance_pct
        if pct is not None and (isinstance(pct, bool) or not isinstance(pct, int)):
            raise ValidationError("low_balance_pct", "expected an integer 1-100 (percent)")
        if pct is not None and not 1 <= pct <= 100:
            raise ValidationError("low_balance_pct", "expected an integer 1-100 (percent)")
        now = self.clock()
        values = {
            "thresholds_micros": json.dumps(list(thresholds)),
            "low_balance_pct": low_balance_pct,
            "email_enabled": bool(email_enabled),
            "updated_at_ms": now,
        }
        table = schema.billing_alerts
        with db_errors("set alerts"):
            async with write_tx(self.engine) as conn:
                tenant = sa.select(schema.tenants.c.id).where(schema.tenants.c.id == tenant_id)
                if (await conn.execute(tenant)).first() is None:
                    raise NotFoundError(f"tenant {tenant_id}: not found")
                await conn.execute(sa.delete(table).where(table.c.tenant_id == tenant_id))
                await conn.execute(sa.insert(table).values(tenant_id=tenant_id, **values))
        return BillingAlerts(thresholds, low_balance_pct, bool(email_enabled), now)

    async def alerts(self, tenant_id: str) -> BillingAlerts | None:
        """The tenant's spend-alert settings, or None if never set."""
        table = schema.billing_alerts
        query = sa.select(table).where(table.c.tenant_id == tenant_id)
        with db_errors("get alerts"):
            async with read_tx(self.engine) as conn:
                row = (await conn.execute(query)).first()
        if row is None:
            return None
        return BillingAlerts(
            tuple(json.loads(row.thresholds_micros)),
            row.low_balance_pct,
            bool(row.email_enabled),
            int(row.updated_at_ms),
        )


def _thresholds(values: Sequence[int]) -> tuple[int, ...]:
    if len(values) > _MAX_THRESHOLDS:
        raise ValidationError("thresholds_usd", f"expected at most {_MAX_THRESHOLDS} thresholds")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("thresholds_usd", "expected amounts in micro-dollars")
        if not 0 < value <= _MAX_THRESHOLD_MICROS:
            raise ValidationError("thresholds_usd", "expected amounts above 0 and at most 1000000")
    return tuple(sorted(set(values)))


def _encode_cursor(record: CallRecord) -> str:
    raw = f"{record.answered_at_ms}:{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, _, call_id = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        at_ms = int(at)
    except (binascii.Error, UnicodeError, ValueError):
        raise ValidationError("cursor", "expected the next_cursor of a previous page") from None
    if not call_id or at_ms < 0:
        raise ValidationError("cursor", "expected the next_cursor of a previous page")
    return at_ms, call_id


def _record(row: sa.Row[tuple[object, ...]]) -> CallRecord:
    m = dict(row._mapping)
    m["direction"] = Direction(m["direction"])
    m["role"] = Role(m["role"])
    m["status"] = CallStatus(m["status"])
    return CallRecord(**m)
