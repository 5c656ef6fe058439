"""The ledger's outbound-dialing steps (``POST /v1/calls``), a mixin of :class:`Ledger`.

An outbound call's row goes ``queued`` (asked of the carrier, nobody answered yet) →
``live`` (the callee answered: from here on it is any other call, finalized and billed
by :meth:`Ledger.finalize`), or ``queued`` → a final status with nothing billed (the
carrier refused the dial, nobody answered, the call was never picked up). Every step is
a conditional ``UPDATE ... WHERE status = 'queued'``, so retries and races between
instances change a row at most once.

The row helpers are :mod:`gateway.store.ledger`'s own (validation, row mapping); they are
imported inside the methods because that module imports this one for its class statement.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ValidationError
from gateway.store.models import CallRecord, CallStart, CallStatus, Direction, validate_e164
from gateway.store.sql import schema
from gateway.store.sql.engine import db_errors, read_tx, write_tx

__all__ = ["LedgerOutboundMixin"]

_UNANSWERED = frozenset(
    {CallStatus.FAILED, CallStatus.NO_ANSWER, CallStatus.BUSY, CallStatus.CANCELED}
)


class LedgerOutboundMixin:
    """Queued outbound calls (needs ``self.engine``)."""

    engine: AsyncEngine
    clock: Callable[[], int]

    async def queue_call(self, start: CallStart) -> CallRecord:
        """Record an outbound call as ``queued`` (``start.answered_at_ms`` = dial time).

        Raises:
            ValidationError: not an outbound call, or a malformed field.
            NotFoundError: no such tenant.
        """
        from gateway.store.ledger import _call, _require_tenant, _start_values

        if start.direction is not Direction.OUTBOUND:
            raise ValidationError("direction", "only outbound calls are queued")
        values = _start_values(start)
        values["status"] = CallStatus.QUEUED.value
        values["remote_number"] = validate_e164(start.remote_number, "remote_number")
        with db_errors("queue call"):
            async with write_tx(self.engine) as conn:
                await _require_tenant(conn, start.tenant_id)
                await conn.execute(sa.insert(schema.calls).values(values))
                return await _call(conn, start.call_id)

    async def dial_placed(self, call_id: str, carrier_call_id: str) -> bool:
        """Note the carrier's id for a queued call (from the carrier's create response).

        Returns False when the call is no longer queued or already has an id (the
        answer request came first and set the id it carried).
        """
        _carrier_id(carrier_call_id)
        c = schema.calls.c
        stmt = (
            sa.update(schema.calls)
            .where(c.id == call_id, c.status == "queued", c.carrier_call_id.is_(None))
            .values(carrier_call_id=carrier_call_id)
        )
        with db_errors("note dial"):
            async with write_tx(self.engine) as conn:
                return bool((await conn.execute(stmt)).rowcount)

    async def outbound_answered(
        self, call_id: str, carrier_call_id: str, answered_at_ms: int
    ) -> CallRecord:
        """The callee answered: ``queued`` → ``live`` under the answer's carrier call id.

        Idempotent: a retried answer request finds the call live and changes nothing.

        Raises:
            NotFoundError: no such call.
        """
        from gateway.store.ledger import _call, _ms

        _carrier_id(carrier_call_id)
        c = schema.calls.c
        stmt = (
            sa.update(schema.calls)
            .where(c.id == call_id, c.status == "queued")
            .values(
                status=CallStatus.LIVE.value,
                carrier_call_id=carrier_call_id,
                answered_at_ms=_ms("answered_at_ms", answered_at_ms),
            )
        )
        with db_errors("answer outbound call"):
            async with write_tx(self.engine) as conn:
                await conn.execute(stmt)
                return await _call(conn, call_id)

    async def dial_ended(
        self, call_id: str, status: CallStatus, reason: str, ended_at_ms: int
    ) -> bool:
        """End a queued call that never went live; nothing is billed (0 units, $0).

        Returns False (and changes nothing) when the call is not queued any more.

        Raises:
            ValidationError: ``status`` is not a final status of an unanswered call.
        """
        from gateway.store.ledger import _ms, _reason

        if status not in _UNANSWERED:
            allowed = ", ".join(sorted(s.value for s in _UNANSWERED))
            raise ValidationError("status", f"expected one of {allowed}, got {status!r}")
        c = schema.calls.c
        stmt = (
            sa.update(schema.calls)
            .where(c.id == call_id, c.status == "queued")
            .values(
                status=status.value,
                end_reason=_reason(reason),
                ended_at_ms=_ms("ended_at_ms", ended_at_ms),
                billable_units=0,
                cost_micros=0,
            )
        )
        with db_errors("end queued call"):
            async with write_tx(self.engine) as conn:
                return bool((await conn.execute(stmt)).rowcount)

    async def expire_queued(self, cutoff_ms: int, limit: int = 100) -> list[str]:
        """End as ``no_answer`` the queued calls dialed before ``cutoff_ms``; their ids.

        A callee who never picks up leaves the call queued (the carrier does not request
        our answer URL); the reaper calls this so such calls end.
        """
        c = schema.calls.c
        query = (
            sa.select(c.id)
            .where(c.status == "queued", c.answered_at_ms < cutoff_ms)
            .order_by(c.answered_at_ms)
            .limit(limit)
        )
        with db_errors("find expired queued calls"):
            async with read_tx(self.engine) as conn:
                ids = [str(row.id) for row in (await conn.execute(query)).all()]
        return [
            call_id
            for call_id in ids
            if await self.dial_ended(call_id, CallStatus.NO_ANSWER, "no_answer", self.clock())
        ]


def _carrier_id(value: object) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise ValidationError("carrier_call_id", "expected 1-128 characters")
