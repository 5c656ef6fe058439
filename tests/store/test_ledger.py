"""Ledger contract: calls, checkpoints, exactly-once finalization, balances.

Run on SQLite and PostgreSQL. The race tests use real concurrency: separate connections
from the pool (separate threads for aiosqlite, separate server sessions for asyncpg).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import NotFoundError, ValidationError
from gateway.metering import Role
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.models import CallEnd, CallStart, CallStatus, TranscriptLine
from gateway.store.sql import schema
from tests.store.conftest import new_call_id, random_number, row_counts

T0 = 1_700_000_000_000


async def _tenant_id(directory: Directory) -> str:
    return (await directory.create_tenant(f"ledger {uuid.uuid4().hex[:6]}")).id


def _start(tenant_id: str, role: Role = Role.OPERATOR, max_s: int = 600) -> CallStart:
    return CallStart(
        call_id=new_call_id(),
        tenant_id=tenant_id,
        agent_id=str(uuid.uuid4()),
        number=random_number(),
        carrier="twilio",
        role=role,
        max_call_duration_s=max_s,
        answered_at_ms=T0,
        carrier_call_id=f"CA{uuid.uuid4().hex}",
    )


def _end(call_id: str, audio_ms: int, status: CallStatus = CallStatus.COMPLETED) -> CallEnd:
    return CallEnd(call_id, status, "caller_hangup", T0 + 100_000, audio_ms)


async def _debits(engine: AsyncEngine, call_id: str) -> list[int]:
    ledger = schema.ledger
    query = sa.select(ledger.c.amount_micros).where(ledger.c.call_id == call_id)
    async with engine.connect() as conn:
        return [int(v) for v in (await conn.execute(query)).scalars()]


# -- calls and checkpoints -------------------------------------------------------


async def test_open_call_is_idempotent(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    start = _start(await _tenant_id(directory))
    first = await ledger.open_call(start)
    before = await row_counts(engine)
    assert await ledger.open_call(start) == first
    assert await row_counts(engine) == before
    assert first.status is CallStatus.LIVE
    assert (first.audio_ms, first.billable_units, first.cost_micros) == (0, None, None)
    assert first.carrier_call_id == start.carrier_call_id


async def test_open_call_for_unknown_tenant_or_bad_fields_writes_nothing(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    tenant_id = await _tenant_id(directory)
    before = await row_counts(engine)
    with pytest.raises(NotFoundError):
        await ledger.open_call(_start(str(uuid.uuid4())))
    bad = _start(tenant_id)
    for changed, field in (
        ({"carrier": "skype"}, "carrier"),
        ({"number": "555"}, "number"),
        ({"max_call_duration_s": 10}, "max_call_duration_s"),
        ({"answered_at_ms": -1}, "answered_at_ms"),
    ):
        with pytest.raises(ValidationError) as info:
            await ledger.open_call(dataclasses.replace(bad, **changed))
        assert info.value.field == field
    assert await row_counts(engine) == before


async def test_checkpoints_are_a_high_water_mark(directory: Directory, ledger: Ledger) -> None:
    start = _start(await _tenant_id(directory))
    await ledger.open_call(start)
    await ledger.media_started(start.call_id, T0 + 1_000)
    assert await ledger.checkpoint(start.call_id, 10_000, T0 + 11_000)
    assert await ledger.checkpoint(start.call_id, 5_000, T0 + 6_000)  # late, reordered
    assert await ledger.checkpoint(start.call_id, 10_000, T0 + 11_000)  # duplicate
    record = await ledger.get_call(start.call_id)
    assert (record.audio_ms, record.checkpoint_at_ms) == (10_000, T0 + 11_000)
    assert record.media_started_at_ms == T0 + 1_000
    await ledger.media_started(start.call_id, T0 + 9_999)  # first one wins
    assert (await ledger.get_call(start.call_id)).media_started_at_ms == T0 + 1_000


async def test_checkpoint_after_final_is_ignored(directory: Directory, ledger: Ledger) -> None:
    start = _start(await _tenant_id(directory))
    await ledger.open_call(start)
    await ledger.finalize(_end(start.call_id, 40_000))
    assert not await ledger.checkpoint(start.call_id, 90_000, T0 + 200_000)
    assert (await ledger.get_call(start.call_id)).audio_ms == 40_000


async def test_unknown_call_is_not_found(ledger: Ledger) -> None:
    for attempt in (
        ledger.checkpoint("nope", 1, T0),
        ledger.finalize(_end("nope", 1)),
        ledger.get_call("nope"),
        ledger.media_started("nope", T0),
    ):
        with pytest.raises(NotFoundError):
            await attempt


async def test_another_tenants_call_is_not_found(directory: Directory, ledger: Ledger) -> None:
    start = _start(await _tenant_id(directory))
    await ledger.open_call(start)
    with pytest.raises(NotFoundError):
        await ledger.get_call(start.call_id, tenant_id=await _tenant_id(directory))
    assert (await ledger.get_call(start.call_id, start.tenant_id)).id == start.call_id


# -- finalization and billing ----------------------------------------------------


@pytest.mark.parametrize(
    ("role", "audio_ms", "units", "cost"),
    [
        (Role.OPERATOR, 0, 0, 0),
        (Role.OPERATOR, 1, 1, 25_000),
        (Role.SPECIALIST, 30_000, 1, 50_000),
        (Role.EXECUTIVE, 30_001, 2, 250_000),
        (Role.CONCIERGE, 145_000, 5, 1_000_000),
    ],
)
async def test_final_record_bills_units_and_debits_once(
    directory: Directory,
    ledger: Ledger,
    engine: AsyncEngine,
    role: Role,
    audio_ms: int,
    units: int,
    cost: int,
) -> None:
    tenant_id = await _tenant_id(directory)
    await ledger.top_up(tenant_id, 5_000_000)
    start = _start(tenant_id, role)
    await ledger.open_call(start)
    result = await ledger.finalize(_end(start.call_id, audio_ms))
    assert result.won
    record = result.record
    assert (record.status, record.end_reason) == (CallStatus.COMPLETED, "caller_hangup")
    assert (record.audio_ms, record.billable_units, record.cost_micros) == (audio_ms, units, cost)
    assert await _debits(engine, start.call_id) == ([-cost] if cost else [])
    assert await ledger.balance_micros(tenant_id) == 5_000_000 - cost


async def test_billing_is_capped_by_the_calls_max_duration(
    directory: Directory, ledger: Ledger
) -> None:
    start = _start(await _tenant_id(directory), Role.OPERATOR, max_s=60)
    await ledger.open_call(start)
    record = (await ledger.finalize(_end(start.call_id, 3_600_000))).record
    assert (record.audio_ms, record.billable_units, record.cost_micros) == (3_600_000, 2, 50_000)


async def test_final_audio_never_goes_below_the_last_checkpoint(
    directory: Directory, ledger: Ledger
) -> None:
    start = _start(await _tenant_id(directory))
    await ledger.open_call(start)
    await ledger.checkpoint(start.call_id, 95_000, T0 + 96_000)
    record = (await ledger.finalize(_end(start.call_id, 1_000))).record
    assert (record.audio_ms, record.billable_units) == (95_000, 4)


async def test_second_finalize_returns_the_first_record_unchanged(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    start = _start(await _tenant_id(directory))
    await ledger.open_call(start)
    first = await ledger.finalize(_end(start.call_id, 61_000))
    before = await row_counts(engine)
    second = await ledger.finalize(_end(start.call_id, 999_000, CallStatus.FAILED))
    assert (first.won, second.won) == (True, False)
    assert second.record == first.record
    assert await row_counts(engine) == before


async def test_racing_finalizers_write_one_record_and_one_debit(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    tenant_id = await _tenant_id(directory)
    await ledger.top_up(tenant_id, 10_000_000)
    starts = [_start(tenant_id, Role.SPECIALIST) for _ in range(5)]
    for start in starts:
        await ledger.open_call(start)
        await ledger.checkpoint(start.call_id, 50_000, T0 + 51_000)
    # Eight finalizers per call (the call's gateway plus reapers), all at once.
    results = await asyncio.gather(
        *(
            ledger.finalize(_end(start.call_id, 59_000 + i, CallStatus.COMPLETED))
            for start in starts
            for i in range(8)
        )
    )
    for start in starts:
        mine = [r for r in results if r.record.id == start.call_id]
        assert sum(r.won for r in mine) == 1
        assert len({r.record for r in mine}) == 1
        assert await _debits(engine, start.call_id) == [-100_000]  # 2 units x $0.05
    assert await ledger.balance_micros(tenant_id) == 10_000_000 - 5 * 100_000


@pytest.mark.parametrize(
    ("field", "end"),
    [
        ("status", CallEnd("x", CallStatus.LIVE, "r", T0, 0)),
        ("status", CallEnd("x", "hung", "r", T0, 0)),  # type: ignore[arg-type]
        ("end_reason", CallEnd("x", CallStatus.COMPLETED, "", T0, 0)),
        ("audio_ms", CallEnd("x", CallStatus.COMPLETED, "r", T0, -5)),
        ("audio_ms", CallEnd("x", CallStatus.COMPLETED, "r", T0, 1.5)),  # type: ignore[arg-type]
        ("ended_at_ms", CallEnd("x", CallStatus.COMPLETED, "r", -1, 0)),
    ],
)
async def test_invalid_final_record_is_refused_and_the_call_stays_live(
    directory: Directory, ledger: Ledger, engine: AsyncEngine, field: str, end: CallEnd
) -> None:
    start = _start(await _tenant_id(directory))
    await ledger.open_call(start)
    before = await row_counts(engine)
    bad = CallEnd(start.call_id, end.status, end.end_reason, end.ended_at_ms, end.audio_ms)
    with pytest.raises(ValidationError) as info:
        await ledger.finalize(bad)
    assert info.value.field == field
    assert await row_counts(engine) == before
    assert (await ledger.get_call(start.call_id)).status is CallStatus.LIVE


@pytest.mark.parametrize(
    "status", [s for s in CallStatus if s not in (CallStatus.LIVE, CallStatus.QUEUED)]
)
async def test_every_final_status_is_accepted(
    directory: Directory, ledger: Ledger, status: CallStatus
) -> None:
    start = _start(await _tenant_id(directory))
    await ledger.open_call(start)
    record = (await ledger.finalize(_end(start.call_id, 0, status))).record
    assert record.status is status
    assert record.final
    assert (record.billable_units, record.cost_micros) == (0, 0)


async def test_list_calls_is_per_tenant(directory: Directory, ledger: Ledger) -> None:
    mine, theirs = await _tenant_id(directory), await _tenant_id(directory)
    a, b = _start(mine), _start(theirs)
    await ledger.open_call(a)
    await ledger.open_call(b)
    assert [c.id for c in await ledger.list_calls(mine)] == [a.call_id]


# -- transcripts -----------------------------------------------------------------


async def test_transcript_lines_are_kept_in_order(directory: Directory, ledger: Ledger) -> None:
    start = _start(await _tenant_id(directory))
    await ledger.open_call(start)
    lines = [
        TranscriptLine("caller", "Hello?", T0 + 1),
        TranscriptLine("agent", "Hi, how can I help?", T0 + 2),
    ]
    await ledger.append_transcript(start.call_id, lines[:1])
    await ledger.append_transcript(start.call_id, lines[1:])
    assert await ledger.transcript(start.call_id) == lines


async def test_bad_transcript_line_writes_nothing(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    start = _start(await _tenant_id(directory))
    await ledger.open_call(start)
    before = await row_counts(engine)
    good = TranscriptLine("agent", "fine", T0)
    with pytest.raises(ValidationError, match="speaker"):
        await ledger.append_transcript(start.call_id, [good, TranscriptLine("robot", "x", T0)])
    for text in ("", "x" * 8001):
        with pytest.raises(ValidationError, match="text: expected 1-8000"):
            await ledger.append_transcript(start.call_id, [TranscriptLine("agent", text, T0)])
    with pytest.raises(NotFoundError):
        await ledger.append_transcript("no-such-call", [good])
    assert await row_counts(engine) == before


# -- balance ---------------------------------------------------------------------


async def test_balance_is_the_sum_of_transactions(directory: Directory, ledger: Ledger) -> None:
    tenant_id = await _tenant_id(directory)
    assert await ledger.balance_micros(tenant_id) == 0
    assert await ledger.top_up(tenant_id, 10_000_000, "card") == 10_000_000
    assert await ledger.adjust(tenant_id, -2_500_000, "refund of a test call") == 7_500_000
    kinds = [(t.kind, t.amount_micros) for t in await ledger.transactions(tenant_id)]
    assert kinds == [("adjustment", -2_500_000), ("topup", 10_000_000)]
    other = await _tenant_id(directory)
    await ledger.top_up(other, 3_000_000, "card")
    assert await ledger.balance_micros(other) == 3_000_000  # each tenant its own rows only
    assert await ledger.balance_micros(tenant_id) == 7_500_000


@pytest.mark.parametrize("amount", [0, -1, 10**12 + 1, 1.5, True])
async def test_invalid_top_up_writes_nothing(
    directory: Directory, ledger: Ledger, engine: AsyncEngine, amount: object
) -> None:
    tenant_id = await _tenant_id(directory)
    before = await row_counts(engine)
    with pytest.raises(ValidationError, match="amount_micros"):
        await ledger.top_up(tenant_id, amount)  # type: ignore[arg-type]
    assert await row_counts(engine) == before


async def test_top_up_for_unknown_tenant_or_adjust_without_memo_writes_nothing(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    tenant_id = await _tenant_id(directory)
    before = await row_counts(engine)
    with pytest.raises(NotFoundError):
        await ledger.top_up(str(uuid.uuid4()), 1_000)
    with pytest.raises(ValidationError, match="memo"):
        await ledger.adjust(tenant_id, -5, " ")
    with pytest.raises(NotFoundError):
        await ledger.balance_micros(str(uuid.uuid4()))
    assert await row_counts(engine) == before


async def test_the_schema_itself_refuses_a_second_debit_for_one_call(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    start = _start(await _tenant_id(directory))
    await ledger.open_call(start)
    await ledger.finalize(_end(start.call_id, 10_000))
    second = {
        "tenant_id": start.tenant_id,
        "kind": "call",
        "amount_micros": -25_000,
        "call_id": start.call_id,
        "created_at_ms": T0,
    }
    with pytest.raises(sa.exc.IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(sa.insert(schema.ledger).values(second))
    assert await _debits(engine, start.call_id) == [-25_000]
