"""The ledger: call detail records, usage checkpoints and balance transactions (SQL).

Idempotency design (reliability.md section 2.2; docs/state.md):

* :meth:`Ledger.open_call` inserts the call as ``live``; a retried answer webhook with
  the same call id changes nothing.
* :meth:`Ledger.checkpoint` is a high-water mark: ``audio_ms`` and ``checkpoint_at_ms``
  only ever grow, so duplicates, reordering and replays are harmless, and a final call
  ignores late checkpoints. :meth:`Ledger.checkpoint_many` applies the same statement to
  many calls in one transaction (the live calls' batcher, :mod:`gateway.server.checkpoints`).
* :meth:`Ledger.finalize` writes the final record with one conditional
  ``UPDATE ... WHERE status = 'live'``: of two finalizers racing (the call's gateway and
  a reaper, or two reapers) exactly one changes the row. The winner computes units and
  cost (:mod:`gateway.metering`) and inserts the debit in the *same* transaction; the
  ledger's ``UNIQUE (call_id, kind)`` is a second fence against a double debit. The
  winner also writes the ``call.completed`` webhook (and any billing alert the debit
  crosses) to the outbox in that transaction (:mod:`gateway.webhooks.outbox`).
* The balance is the sum of the tenant's transactions: top-ups (positive), call debits
  (negative) and adjustments. Money is integer micro-dollars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import NotFoundError, ValidationError
from gateway.metering import Role, charge
from gateway.store.ledger_outbound import LedgerOutboundMixin
from gateway.store.ledger_reports import LedgerReportsMixin
from gateway.store.models import (
    MAX_CALL_DURATION_RANGE_S,
    CallEnd,
    CallRecord,
    CallStart,
    CallStatus,
    Direction,
    TranscriptLine,
    validate_e164,
)
from gateway.store.sql import schema
from gateway.store.sql.engine import db_errors, insert_ignore, read_tx, wall_clock_ms, write_tx
from gateway.webhooks import outbox

__all__ = [
    "CHECKPOINT_SLICE",
    "CheckpointItem",
    "Finalized",
    "Ledger",
    "StaleCall",
    "Transaction",
    "validate_checkpoint",
]

_CARRIERS = frozenset(schema.CARRIERS)
_MAX_TOPUP_MICROS = 10**12  # one million dollars in one go is a typo, not a top-up

CheckpointItem = tuple[str, int, int]
"""One usage checkpoint: ``(call_id, audio_ms, at_ms)``."""


def _checkpoint_statement() -> sa.Update:
    """The high-water-mark checkpoint, with bound parameters ``cid``, ``audio`` and ``at``.

    Built once: executed with one parameter dict (:meth:`Ledger.checkpoint`) or a list of
    them (:meth:`Ledger.checkpoint_many`, a DBAPI ``executemany``).
    """
    c = schema.calls.c
    audio = sa.bindparam("audio", type_=sa.BigInteger)
    at = sa.bindparam("at", type_=sa.BigInteger)
    return (
        sa.update(schema.calls)
        .where(c.id == sa.bindparam("cid", type_=c.id.type), c.status == "live")
        .values(
            audio_ms=sa.case((c.audio_ms < audio, audio), else_=c.audio_ms),
            checkpoint_at_ms=sa.case(
                (sa.or_(c.checkpoint_at_ms.is_(None), c.checkpoint_at_ms < at), at),
                else_=c.checkpoint_at_ms,
            ),
        )
    )


_CHECKPOINT = _checkpoint_statement()


def _finalize_statement() -> sa.Update:
    """The finalizer's claim, bound ``cid``, ``status``, ``reason``, ``ended``, ``audio``."""
    c = schema.calls.c
    audio = sa.bindparam("audio", type_=sa.BigInteger)
    return (
        sa.update(schema.calls)
        .where(c.id == sa.bindparam("cid", type_=c.id.type), c.status == "live")
        .values(
            status=sa.bindparam("final_status", type_=c.status.type),
            end_reason=sa.bindparam("reason", type_=c.end_reason.type),
            ended_at_ms=sa.bindparam("ended", type_=sa.BigInteger),
            audio_ms=sa.case((c.audio_ms < audio, audio), else_=c.audio_ms),
        )
        .returning(c.tenant_id, c.role, c.max_call_duration_s, c.audio_ms)
    )


# Statements of a call's life, built once with bound parameters: building one costs more
# CPU than running it on SQLite (0.1-0.3 ms of SQLAlchemy each, in every call's set-up).
_C = schema.calls.c
_FINALIZE = _finalize_statement()
_CALL = sa.select(schema.calls).where(_C.id == sa.bindparam("cid", type_=_C.id.type))
_TENANT_EXISTS = sa.select(schema.tenants.c.id).where(
    schema.tenants.c.id == sa.bindparam("tid", type_=schema.tenants.c.id.type)
)
_LEDGER_ROW = sa.insert(schema.ledger)  # the columns are the keys of the parameters
_TENANT_BALANCE = sa.select(
    schema.tenants.c.id,
    sa.select(sa.func.coalesce(sa.func.sum(schema.ledger.c.amount_micros), 0))
    .where(schema.ledger.c.tenant_id == schema.tenants.c.id)
    .scalar_subquery()
    .label("balance"),
).where(schema.tenants.c.id == sa.bindparam("tid", type_=schema.tenants.c.id.type))
"""The tenant (no row: unknown) and its balance, in one statement (every call's answer)."""
_MEDIA_STARTED = (
    sa.update(schema.calls)
    .where(
        _C.id == sa.bindparam("cid", type_=_C.id.type),
        _C.status == "live",
        _C.media_started_at_ms.is_(None),
    )
    .values(media_started_at_ms=sa.bindparam("at", type_=sa.BigInteger))
)
_BILL = (
    sa.update(schema.calls)
    .where(_C.id == sa.bindparam("cid", type_=_C.id.type))
    .values(
        billable_units=sa.bindparam("units", type_=sa.Integer),
        cost_micros=sa.bindparam("cost", type_=sa.BigInteger),
    )
)

CHECKPOINT_SLICE = 50
"""Checkpoints per statement in :meth:`Ledger.checkpoint_many` (about 1 ms on SQLite)."""


@dataclass(frozen=True, slots=True)
class Finalized:
    """Result of :meth:`Ledger.finalize`: the final record, and whether this call wrote it."""

    record: CallRecord
    won: bool


@dataclass(frozen=True, slots=True)
class Transaction:
    """One balance transaction."""

    id: int
    tenant_id: str
    kind: str
    """``topup``, ``call`` or ``adjustment``."""
    amount_micros: int
    call_id: str | None
    memo: str | None
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class StaleCall:
    """A live call not heard from since ``last_seen_ms`` (a reaper candidate)."""

    call_id: str
    last_seen_ms: int


class Ledger(LedgerReportsMixin, LedgerOutboundMixin):
    """Calls, checkpoints and balances over one SQL engine (API read models: the mixin).

    Args:
        engine: an engine from :func:`gateway.store.sql.engine.create_engine`, migrated.
        clock: wall-clock milliseconds for transaction times (injected in tests).
    """

    def __init__(self, engine: AsyncEngine, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.engine = engine
        self.clock = clock

    # -- calls -------------------------------------------------------------------

    async def open_call(self, start: CallStart) -> CallRecord:
        """Record an answered call as live; idempotent on the call id."""
        values = _start_values(start)
        with db_errors("open call"):
            async with write_tx(self.engine) as conn:
                await _require_tenant(conn, start.tenant_id)
                await insert_ignore(conn, schema.calls, values)
                return await _call(conn, start.call_id)

    async def media_started(self, call_id: str, at_ms: int) -> None:
        """Note when the media stream started (first time only)."""
        params = {"cid": call_id, "at": _ms("at_ms", at_ms)}
        with db_errors("mark media start"):
            async with write_tx(self.engine) as conn:
                if (await conn.execute(_MEDIA_STARTED, params)).rowcount == 0:
                    await _call(conn, call_id)  # raises NotFoundError for unknown ids

    async def checkpoint(self, call_id: str, audio_ms: int, at_ms: int) -> bool:
        """Record the call's cumulative audio so far; False if the call is already final.

        A high-water mark: a smaller ``audio_ms`` or older ``at_ms`` never lowers what is
        stored, so repeating or reordering checkpoints is harmless.
        """
        params = _checkpoint_params(call_id, audio_ms, at_ms)
        with db_errors("checkpoint"):
            async with write_tx(self.engine) as conn:
                if (await conn.execute(_CHECKPOINT, params)).rowcount == 1:
                    return True
                await _call(conn, call_id)
                return False

    async def checkpoint_many(self, items: Iterable[CheckpointItem]) -> None:
        """Apply many checkpoints in one transaction (one ``executemany``).

        Each item is applied as by :meth:`checkpoint`: a high-water mark, on live calls
        only, so items for final (or unknown) calls change nothing. Which ones those were
        is not reported: asyncpg's ``executemany`` gives no row counts, and the ``SELECT``
        it would take nearly doubled the CPU cost of a batch of 15 (measured on both
        backends). Every item is validated first, so a malformed one writes nothing.

        Raises:
            ValidationError: an item is malformed.
            StateError: the database failed; nothing was written.
        """
        # Sorted by call id: two batches lock their rows in the same order (PostgreSQL),
        # so they cannot deadlock on each other.
        params = sorted((_checkpoint_params(*item) for item in items), key=itemgetter("cid"))
        if not params:
            return
        with db_errors("checkpoint"):
            async with write_tx(self.engine) as conn:
                # In slices: on SQLite each statement runs on the loop's thread, and one
                # executemany of every live call (300 rows, ~5 ms) would hold up their media.
                for first in range(0, len(params), CHECKPOINT_SLICE):
                    await conn.execute(_CHECKPOINT, params[first : first + CHECKPOINT_SLICE])

    async def finalize(self, end: CallEnd) -> Finalized:
        """Write the call's final record and its debit, exactly once per call.

        Billable audio is the larger of ``end.audio_ms`` and the last checkpoint, capped
        at the call's max duration (see :func:`gateway.metering.billable_units`).

        Raises:
            ValidationError: ``end.status`` is not final or a field is malformed.
            NotFoundError: no such call.
        """
        status = _final_status(end.status)
        reason = _reason(end.end_reason)
        claim = {
            "cid": end.call_id,
            "final_status": status.value,
            "reason": reason,
            "ended": _ms("ended_at_ms", end.ended_at_ms),
            "audio": _ms("audio_ms", end.audio_ms),
        }
        with db_errors("finalize call"):
            async with write_tx(self.engine) as conn:
                # The write comes first: it takes the row (PostgreSQL) or database
                # (SQLite) lock, so a racing finalizer waits and then matches no row.
                won = (await conn.execute(_FINALIZE, claim)).first()
                if won is None:
                    return Finalized(await _call(conn, end.call_id), won=False)
                await self._bill(conn, end.call_id, won)
                record = await _call(conn, end.call_id)
                # The webhook outbox rows commit (or roll back) with the final record.
                await outbox.call_final_events(conn, record, self.clock())
                return Finalized(record, won=True)

    async def _bill(
        self, conn: AsyncConnection, call_id: str, row: sa.Row[tuple[object, ...]]
    ) -> None:
        cost = charge(int(row.audio_ms), int(row.max_call_duration_s) * 1000, Role(row.role))
        await conn.execute(_BILL, {"cid": call_id, "units": cost.units, "cost": cost.cost_micros})
        if cost.cost_micros > 0:
            debit = {
                "tenant_id": row.tenant_id,
                "kind": "call",
                "amount_micros": -cost.cost_micros,
                "call_id": call_id,
                "created_at_ms": self.clock(),
            }
            await conn.execute(_LEDGER_ROW, debit)

    async def get_call(self, call_id: str, tenant_id: str | None = None) -> CallRecord:
        """One call; with ``tenant_id``, only if it is that tenant's. Raises NotFoundError."""
        with db_errors("get call"):
            async with read_tx(self.engine) as conn:
                record = await _call(conn, call_id)
        if tenant_id is not None and record.tenant_id != tenant_id:
            raise NotFoundError(f"call {call_id}: not found")
        return record

    async def list_calls(self, tenant_id: str, limit: int = 100) -> list[CallRecord]:
        """The tenant's most recent calls, newest first."""
        c = schema.calls.c
        query = (
            sa.select(schema.calls)
            .where(c.tenant_id == tenant_id)
            .order_by(c.answered_at_ms.desc(), c.id)
            .limit(max(1, min(limit, 1000)))
        )
        with db_errors("list calls"):
            async with read_tx(self.engine) as conn:
                return [_record(row) for row in (await conn.execute(query)).all()]

    async def stale_calls(self, cutoff_ms: int, limit: int = 100) -> list[StaleCall]:
        """Live calls last heard from (checkpoint, media start or answer) before ``cutoff_ms``."""
        c = schema.calls.c
        last_seen = sa.func.coalesce(c.checkpoint_at_ms, c.media_started_at_ms, c.answered_at_ms)
        query = (
            sa.select(c.id, last_seen.label("last_seen"))
            .where(c.status == "live", last_seen < cutoff_ms)
            .order_by(last_seen)
            .limit(limit)
        )
        with db_errors("find stale calls"):
            async with read_tx(self.engine) as conn:
                rows = (await conn.execute(query)).all()
        return [StaleCall(str(row.id), int(row.last_seen)) for row in rows]

    # -- transcripts -------------------------------------------------------------

    async def append_transcript(self, call_id: str, lines: Sequence[TranscriptLine]) -> None:
        """Append lines the agent sent to the call's transcript."""
        values = [
            {
                "call_id": call_id,
                "speaker": _speaker(line.speaker),
                "text": _text(line.text),
                "at_ms": _ms("at_ms", line.at_ms),
            }
            for line in lines
        ]
        if not values:
            return
        with db_errors("append transcript"):
            async with write_tx(self.engine) as conn:
                await _call(conn, call_id)
                await conn.execute(sa.insert(schema.call_transcripts), values)

    async def transcript(self, call_id: str) -> list[TranscriptLine]:
        """The call's transcript lines, in the order they were appended."""
        t = schema.call_transcripts.c
        query = sa.select(t.speaker, t.text, t.at_ms).where(t.call_id == call_id).order_by(t.id)
        with db_errors("read transcript"):
            async with read_tx(self.engine) as conn:
                rows = (await conn.execute(query)).all()
        return [TranscriptLine(str(r.speaker), str(r.text), int(r.at_ms)) for r in rows]

    # -- balance -----------------------------------------------------------------

    async def top_up(self, tenant_id: str, amount_micros: int, memo: str | None = None) -> int:
        """Add prepaid credit; returns the new balance in micro-dollars."""
        amount = _amount(amount_micros, positive=True)
        return await self._transact(tenant_id, "topup", amount, memo)

    async def adjust(self, tenant_id: str, amount_micros: int, memo: str) -> int:
        """Add a signed correction (refund, goodwill, fix); returns the new balance."""
        amount = _amount(amount_micros, positive=False)
        if not memo or not memo.strip():
            raise ValidationError("memo", "an adjustment needs a memo saying why")
        return await self._transact(tenant_id, "adjustment", amount, memo)

    async def _transact(self, tenant_id: str, kind: str, amount: int, memo: str | None) -> int:
        if memo is not None and len(memo) > 200:
            raise ValidationError("memo", "expected at most 200 characters")
        values = {"tenant_id": tenant_id, "kind": kind, "amount_micros": amount, "memo": memo}
        with db_errors("record transaction"):
            async with write_tx(self.engine) as conn:
                await _require_tenant(conn, tenant_id)
                values["created_at_ms"] = self.clock()
                await conn.execute(_LEDGER_ROW, values)
                return await _tenant_balance(conn, tenant_id)

    async def balance_micros(self, tenant_id: str) -> int:
        """The tenant's balance: the sum of its transactions, in micro-dollars."""
        with db_errors("read balance"):
            async with read_tx(self.engine) as conn:
                return await _tenant_balance(conn, tenant_id)

    async def transactions(self, tenant_id: str, limit: int = 100) -> list[Transaction]:
        """The tenant's most recent transactions, newest first."""
        t = schema.ledger.c
        query = (
            sa.select(schema.ledger)
            .where(t.tenant_id == tenant_id)
            .order_by(t.id.desc())
            .limit(max(1, min(limit, 1000)))
        )
        with db_errors("list transactions"):
            async with read_tx(self.engine) as conn:
                rows = (await conn.execute(query)).all()
        return [Transaction(**dict(row._mapping)) for row in rows]


# -- helpers ---------------------------------------------------------------------


async def _require_tenant(conn: AsyncConnection, tenant_id: str) -> None:
    if (await conn.execute(_TENANT_EXISTS, {"tid": tenant_id})).first() is None:
        raise NotFoundError(f"tenant {tenant_id}: not found")


async def _tenant_balance(conn: AsyncConnection, tenant_id: str) -> int:
    row = (await conn.execute(_TENANT_BALANCE, {"tid": tenant_id})).first()
    if row is None:
        raise NotFoundError(f"tenant {tenant_id}: not found")
    return int(row.balance)


async def _call(conn: AsyncConnection, call_id: str) -> CallRecord:
    row = (await conn.execute(_CALL, {"cid": call_id})).first()
    if row is None:
        raise NotFoundError(f"call {call_id}: not found")
    return _record(row)


def _record(row: sa.Row[tuple[object, ...]]) -> CallRecord:
    m = dict(row._mapping)
    m["direction"] = Direction(m["direction"])
    m["role"] = Role(m["role"])
    m["status"] = CallStatus(m["status"])
    return CallRecord(**m)


def _start_values(start: CallStart) -> dict[str, object]:
    if not 1 <= len(start.call_id) <= 64:
        raise ValidationError("call_id", "expected 1-64 characters")
    if start.carrier not in _CARRIERS:
        raise ValidationError("carrier", f"expected one of {', '.join(sorted(_CARRIERS))}")
    low, high = MAX_CALL_DURATION_RANGE_S
    if not low <= start.max_call_duration_s <= high:
        raise ValidationError("max_call_duration_s", f"expected an integer {low}-{high} (seconds)")
    if start.carrier_call_id is not None and not 1 <= len(start.carrier_call_id) <= 128:
        raise ValidationError("carrier_call_id", "expected 1-128 characters")
    return {
        "id": start.call_id,
        "carrier_call_id": start.carrier_call_id,
        "tenant_id": start.tenant_id,
        "agent_id": start.agent_id,
        "number": validate_e164(start.number),
        "carrier": start.carrier,
        "direction": Direction(start.direction).value,
        "role": Role(start.role).value,
        "max_call_duration_s": start.max_call_duration_s,
        "status": CallStatus.LIVE.value,
        "answered_at_ms": _ms("answered_at_ms", start.answered_at_ms),
        "audio_ms": 0,
    }


def validate_checkpoint(call_id: object, audio_ms: object, at_ms: object) -> None:
    """Check one checkpoint's fields as :meth:`Ledger.checkpoint_many` will.

    Raises:
        ValidationError: ``call_id`` is not 1-64 characters, or a time is not an
            integer >= 0.
    """
    _checkpoint_params(call_id, audio_ms, at_ms)


def _checkpoint_params(call_id: object, audio_ms: object, at_ms: object) -> dict[str, object]:
    if not isinstance(call_id, str) or not 1 <= len(call_id) <= 64:
        raise ValidationError("call_id", "expected 1-64 characters")
    return {"cid": call_id, "audio": _ms("audio_ms", audio_ms), "at": _ms("at_ms", at_ms)}


def _ms(field_name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(field_name, f"expected an integer >= 0 (milliseconds), got {value!r}")
    return value


def _amount(value: object, *, positive: bool) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError("amount_micros", "expected an integer number of micro-dollars")
    low = 1 if positive else -_MAX_TOPUP_MICROS
    if not low <= value <= _MAX_TOPUP_MICROS or value == 0:
        raise ValidationError(
            "amount_micros", f"expected a non-zero integer {low}-{_MAX_TOPUP_MICROS} micro-dollars"
        )
    return value


def _final_status(status: object) -> CallStatus:
    finals = [s.value for s in CallStatus if s not in (CallStatus.LIVE, CallStatus.QUEUED)]
    if not isinstance(status, str) or status not in finals:
        allowed = ", ".join(finals)
        raise ValidationError("status", f"expected a final status ({allowed}), got {status!r}")
    return CallStatus(status)


def _reason(reason: object) -> str:
    if not isinstance(reason, str) or not 1 <= len(reason) <= 64:
        raise ValidationError("end_reason", "expected 1-64 characters")
    return reason


def _text(text: object) -> str:
    # docs/agent-protocol.md, ``transcript``: text is 1-8000 characters.
    if not isinstance(text, str) or not 1 <= len(text) <= 8000:
        raise ValidationError("text", "expected 1-8000 characters")
    return text


def _speaker(speaker: str) -> str:
    if speaker not in ("caller", "agent"):
        raise ValidationError("speaker", f"expected caller or agent, got {speaker!r}")
    return speaker
