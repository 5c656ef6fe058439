"""Reaper contract: calls whose gateway died are finalized once, billed to the last checkpoint.

Times here are in 2001 (``T``), before every other test's calls, so a reaper pass with
the injected clock sees only this module's stale calls.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.metering import Role
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.models import CallStart, CallStatus
from gateway.store.reaper import GATEWAY_LOST, Reaper
from gateway.store.sql.engine import create_engine
from tests.store.conftest import new_call_id, random_number

T = 1_000_000_000_000
STALE_MS = 60_000


async def _live_call(directory: Directory, ledger: Ledger, answered: int) -> CallStart:
    tenant = await directory.create_tenant(f"reaper {uuid.uuid4().hex[:6]}")
    start = CallStart(
        call_id=new_call_id(),
        tenant_id=tenant.id,
        agent_id=str(uuid.uuid4()),
        number=random_number(),
        carrier="plivo",
        role=Role.SPECIALIST,
        max_call_duration_s=600,
        answered_at_ms=answered,
    )
    await ledger.open_call(start)
    return start


async def test_stale_call_is_billed_to_its_last_checkpoint(
    directory: Directory, ledger: Ledger
) -> None:
    start = await _live_call(directory, ledger, T)
    await ledger.media_started(start.call_id, T + 500)
    await ledger.checkpoint(start.call_id, 64_000, T + 65_000)
    reaper = Reaper(ledger, STALE_MS, clock=lambda: T + 65_000 + STALE_MS + 1)
    reaped = [r for r in await reaper.reap_once() if r.id == start.call_id]
    assert len(reaped) == 1
    record = await ledger.get_call(start.call_id)
    assert reaped[0] == record
    assert (record.status, record.end_reason) == (CallStatus.FAILED, GATEWAY_LOST)
    assert (record.audio_ms, record.billable_units, record.cost_micros) == (64_000, 3, 150_000)
    assert record.ended_at_ms == T + 65_000
    assert await ledger.balance_micros(start.tenant_id) == -150_000


async def test_call_heard_from_recently_is_left_alone(directory: Directory, ledger: Ledger) -> None:
    start = await _live_call(directory, ledger, T)
    await ledger.checkpoint(start.call_id, 5_000, T + 100_000)
    reaper = Reaper(ledger, STALE_MS, clock=lambda: T + 100_000 + STALE_MS - 1)
    assert start.call_id not in [r.id for r in await reaper.reap_once()]
    assert (await ledger.get_call(start.call_id)).status is CallStatus.LIVE
    # Once it is stale, it goes: clean up so later passes do not see it.
    late = Reaper(ledger, STALE_MS, clock=lambda: T + 100_000 + STALE_MS + 1)
    assert start.call_id in [r.id for r in await late.reap_once()]


async def test_call_whose_media_never_started_bills_nothing(
    directory: Directory, ledger: Ledger
) -> None:
    start = await _live_call(directory, ledger, T)
    reaper = Reaper(ledger, STALE_MS, clock=lambda: T + STALE_MS + 1)
    await reaper.reap_once()
    record = await ledger.get_call(start.call_id)
    assert (record.status, record.billable_units, record.cost_micros) == (CallStatus.FAILED, 0, 0)
    assert record.ended_at_ms == T


async def test_reapers_on_several_instances_finalize_each_call_once(
    directory: Directory, ledger: Ledger, database_url: str
) -> None:
    starts = [await _live_call(directory, ledger, T + i) for i in range(6)]
    for start in starts:
        await ledger.checkpoint(start.call_id, 31_000, T + 40_000)
    now = T + 40_000 + STALE_MS + 1
    # Four "instances", each with its own engine (own connections), reaping at once.
    engines: list[AsyncEngine] = [create_engine(database_url) for _ in range(4)]
    try:
        reapers = [Reaper(Ledger(e), STALE_MS, clock=lambda: now) for e in engines]
        passes = await asyncio.gather(*(r.reap_once() for r in reapers))
    finally:
        for e in engines:
            await e.dispose()
    won = [r.id for records in passes for r in records]
    for start in starts:
        assert won.count(start.call_id) == 1
        assert await ledger.balance_micros(start.tenant_id) == -100_000  # 2 units x $0.05


async def test_run_loop_reaps_and_stops_when_told(directory: Directory, ledger: Ledger) -> None:
    start = await _live_call(directory, ledger, T)
    stop = asyncio.Event()
    reaper = Reaper(ledger, STALE_MS, clock=lambda: T + STALE_MS + 1)
    task = asyncio.create_task(reaper.run(interval_s=0.01, stop=stop))
    for _ in range(500):
        if (await ledger.get_call(start.call_id)).final:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert (await ledger.get_call(start.call_id)).end_reason == GATEWAY_LOST
