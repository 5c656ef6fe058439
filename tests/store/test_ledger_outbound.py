"""Queued outbound calls in the ledger (SQLite and PostgreSQL), and migration 0004 on a
database that already holds calls, transcripts and debits."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.errors import ValidationError
from gateway.metering import Role
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.models import CallEnd, CallStart, CallStatus, Direction, TranscriptLine
from gateway.store.reaper import Reaper
from gateway.store.sql import schema
from gateway.store.sql.engine import create_engine
from gateway.store.sql.migrate import upgrade
from tests.store.conftest import new_call_id, random_number

T0 = 1_790_000_000_000
CALLEE = "+14155550199"


async def _tenant(directory: Directory) -> str:
    return (await directory.create_tenant(f"out {uuid.uuid4().hex[:6]}")).id


def _outbound(tenant_id: str, at_ms: int = T0) -> CallStart:
    return CallStart(
        call_id=new_call_id(),
        tenant_id=tenant_id,
        agent_id=str(uuid.uuid4()),
        number=random_number(),
        carrier="twilio",
        role=Role.OPERATOR,
        max_call_duration_s=600,
        answered_at_ms=at_ms,
        direction=Direction.OUTBOUND,
        remote_number=CALLEE,
    )


async def test_queued_call_goes_live_then_bills_like_any_call(
    directory: Directory, ledger: Ledger
) -> None:
    tenant = await _tenant(directory)
    await ledger.top_up(tenant, 1_000_000)
    start = _outbound(tenant)
    queued = await ledger.queue_call(start)
    assert (queued.status, queued.direction, queued.remote_number) == (
        CallStatus.QUEUED,
        Direction.OUTBOUND,
        CALLEE,
    )
    assert not queued.final
    sid = "CA" + uuid.uuid4().hex
    assert await ledger.dial_placed(start.call_id, sid)
    assert not await ledger.dial_placed(start.call_id, "CA-other")  # set once
    # Checkpoints and finalize ignore a call that is not live yet.
    assert not await ledger.checkpoint(start.call_id, 5_000, T0 + 1_000)
    assert not (await ledger.finalize(CallEnd(start.call_id, CallStatus.COMPLETED, "x", T0, 0))).won

    live = await ledger.outbound_answered(start.call_id, sid, T0 + 20_000)
    again = await ledger.outbound_answered(start.call_id, sid, T0 + 99_000)
    assert (live.status, live.answered_at_ms, live.carrier_call_id) == (
        CallStatus.LIVE,
        T0 + 20_000,
        sid,
    )
    assert again == live  # a retried answer changes nothing
    assert not await ledger.dial_ended(start.call_id, CallStatus.FAILED, "late", T0)
    end = CallEnd(start.call_id, CallStatus.COMPLETED, "caller_hangup", T0 + 60_000, 31_000)
    final = (await ledger.finalize(end)).record
    assert (final.billable_units, final.cost_micros) == (2, 50_000)
    assert await ledger.balance_micros(tenant) == 950_000


async def test_a_queued_call_that_never_answered_ends_unbilled(
    directory: Directory, ledger: Ledger
) -> None:
    tenant = await _tenant(directory)
    start = _outbound(tenant)
    await ledger.queue_call(start)
    assert await ledger.dial_ended(start.call_id, CallStatus.FAILED, "carrier_dial_failed", T0)
    assert not await ledger.dial_ended(start.call_id, CallStatus.NO_ANSWER, "again", T0)
    record = await ledger.get_call(start.call_id)
    assert (record.status, record.end_reason, record.billable_units, record.cost_micros) == (
        CallStatus.FAILED,
        "carrier_dial_failed",
        0,
        0,
    )
    assert record.final
    with pytest.raises(ValidationError, match="status"):
        await ledger.dial_ended(start.call_id, CallStatus.COMPLETED, "x", T0)


async def test_queue_call_refuses_inbound_and_bad_numbers(
    directory: Directory, ledger: Ledger
) -> None:
    tenant = await _tenant(directory)
    start = _outbound(tenant)
    with pytest.raises(ValidationError, match="direction"):
        await ledger.queue_call(replace(start, direction=Direction.INBOUND))
    with pytest.raises(ValidationError, match="remote_number"):
        await ledger.queue_call(replace(start, remote_number="555"))


async def test_reaper_ends_stale_queued_calls_as_no_answer(
    directory: Directory, ledger: Ledger
) -> None:
    tenant = await _tenant(directory)
    old, fresh = _outbound(tenant, T0), _outbound(tenant, T0 + 590_000)
    for start in (old, fresh):
        await ledger.queue_call(start)
    reaper = Reaper(ledger, stale_after_ms=60_000, clock=lambda: T0 + 601_000)
    await reaper.reap_once()
    assert (await ledger.get_call(old.call_id)).status is CallStatus.NO_ANSWER
    assert (await ledger.get_call(fresh.call_id)).status is CallStatus.QUEUED


async def test_migration_0004_keeps_existing_calls_and_their_children(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    assert await upgrade(url, "0003") == "0003"
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(schema.tenants).values(id="t", name="t", created_at_ms=0))
            call = {
                "id": "c1",
                "tenant_id": "t",
                "number": "+15555550100",
                "carrier": "twilio",
                "direction": "inbound",
                "role": "operator",
                "max_call_duration_s": 600,
                "status": "completed",
                "answered_at_ms": 0,
                "audio_ms": 1000,
            }
            await conn.execute(sa.insert(schema.calls).values(call))
            transcript = {"call_id": "c1", "speaker": "caller", "text": "hi", "at_ms": 1}
            await conn.execute(sa.insert(schema.call_transcripts).values(transcript))
            debit = {"tenant_id": "t", "kind": "call", "amount_micros": -25_000, "call_id": "c1"}
            await conn.execute(sa.insert(schema.ledger).values({**debit, "created_at_ms": 2}))
    finally:
        await engine.dispose()

    assert await upgrade(url) == "0004"

    engine = create_engine(url)
    try:
        ledger = Ledger(engine)
        assert (await ledger.get_call("c1")).status is CallStatus.COMPLETED
        assert await ledger.transcript("c1") == [TranscriptLine("caller", "hi", 1)]
        assert await ledger.balance_micros("t") == -25_000
        queued = await ledger.queue_call(_outbound("t"))
        assert queued.status is CallStatus.QUEUED
        async with engine.begin() as conn:  # the check still refuses unknown statuses
            with pytest.raises(sa.exc.IntegrityError):
                await conn.execute(
                    sa.update(schema.calls).where(schema.calls.c.id == "c1").values(status="x")
                )
    finally:
        await engine.dispose()
