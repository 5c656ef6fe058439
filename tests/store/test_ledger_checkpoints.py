"""Ledger contract: many checkpoints in one transaction (``Ledger.checkpoint_many``).

Run on SQLite and PostgreSQL. The same high-water mark as ``checkpoint``: nothing ever
goes down, final calls are left alone, a malformed item writes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ValidationError
from gateway.store.directory import Directory
from gateway.store.ledger import CHECKPOINT_SLICE, Ledger
from gateway.store.models import CallEnd, CallRecord, CallStatus
from tests.store.conftest import new_call_id, open_live_calls, row_counts

T0 = 1_700_000_000_000


async def _live_calls(directory: Directory, ledger: Ledger, count: int) -> list[str]:
    return await open_live_calls(directory, ledger, count, answered_at_ms=T0, carrier="vonage")


def _usage(record: CallRecord) -> tuple[int, int | None]:
    return record.audio_ms, record.checkpoint_at_ms


async def test_a_batch_is_a_high_water_mark_per_call(directory: Directory, ledger: Ledger) -> None:
    ahead, fresh, twice = await _live_calls(directory, ledger, 3)
    await ledger.checkpoint(ahead, 10_000, T0 + 11_000)
    await ledger.checkpoint_many(
        [
            (ahead, 5_000, T0 + 20_000),  # less audio (reordered), a later time
            (fresh, 7_000, T0 + 8_000),
            (twice, 9_000, T0 + 9_000),
            (twice, 4_000, T0 + 12_000),  # one call twice in a batch: each field's max
        ]
    )
    assert _usage(await ledger.get_call(ahead)) == (10_000, T0 + 20_000)
    assert _usage(await ledger.get_call(fresh)) == (7_000, T0 + 8_000)
    assert _usage(await ledger.get_call(twice)) == (9_000, T0 + 12_000)
    # Replaying an older batch changes nothing.
    await ledger.checkpoint_many([(fresh, 1_000, T0 + 2_000), (twice, 0, T0)])
    assert _usage(await ledger.get_call(fresh)) == (7_000, T0 + 8_000)
    assert _usage(await ledger.get_call(twice)) == (9_000, T0 + 12_000)


async def test_final_and_unknown_calls_are_left_alone(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    live, final = await _live_calls(directory, ledger, 2)
    await ledger.checkpoint(final, 30_000, T0 + 31_000)
    await ledger.finalize(
        CallEnd(final, CallStatus.COMPLETED, "caller_hangup", T0 + 40_000, 39_000)
    )
    before, counts = await ledger.get_call(final), await row_counts(engine)
    await ledger.checkpoint_many(
        [(live, 12_000, T0 + 13_000), (final, 90_000, T0 + 95_000), (new_call_id(), 1, T0)]
    )
    assert await row_counts(engine) == counts  # no row for the unknown call, no debit
    assert _usage(await ledger.get_call(live)) == (12_000, T0 + 13_000)
    assert await ledger.get_call(final) == before  # audio, time, units, cost untouched
    assert _usage(before) == (39_000, T0 + 31_000)


async def test_an_empty_batch_is_no_statement(ledger: Ledger, engine: AsyncEngine) -> None:
    counts = await row_counts(engine)
    await ledger.checkpoint_many([])  # an executemany of no rows would be an error
    await ledger.checkpoint_many(iter(()))
    assert await row_counts(engine) == counts


async def test_a_malformed_item_writes_nothing(directory: Directory, ledger: Ledger) -> None:
    (call_id,) = await _live_calls(directory, ledger, 1)
    for bad, field in (
        ((call_id, -1, T0), "audio_ms"),
        ((call_id, 1_000, True), "at_ms"),
        ((call_id, 1.5, T0), "audio_ms"),
        (("", 1_000, T0), "call_id"),
        (("x" * 65, 1_000, T0), "call_id"),
    ):
        with pytest.raises(ValidationError) as info:
            await ledger.checkpoint_many([(call_id, 5_000, T0 + 5_000), bad])  # type: ignore[list-item]
        assert info.value.field == field
    assert _usage(await ledger.get_call(call_id)) == (0, None)


async def test_a_large_batch_reaches_every_live_call(directory: Directory, ledger: Ledger) -> None:
    live = await _live_calls(directory, ledger, 2)
    unknown = [new_call_id() for _ in range(1_200)]  # sorted in between the live ones
    await ledger.checkpoint_many([(cid, 2_000, T0 + 2_000) for cid in [*unknown, *live]])
    for cid in live:
        assert _usage(await ledger.get_call(cid)) == (2_000, T0 + 2_000)


async def test_a_large_batch_goes_in_slices_of_one_transaction(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    live = await _live_calls(directory, ledger, 3)
    items = [(cid, 3_000, T0 + 3_000) for cid in [new_call_id() for _ in range(120)]]
    statements: list[int] = []
    transactions: list[object] = []

    def count(conn: Any, _cursor: Any, _stmt: str, params: Any, _ctx: Any, many: bool) -> None:
        if many:
            statements.append(len(params))
            transactions.append(conn.get_transaction())

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        await ledger.checkpoint_many([*items, *((cid, 3_000, T0 + 3_000) for cid in live)])
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert statements == [CHECKPOINT_SLICE, CHECKPOINT_SLICE, 123 - 2 * CHECKPOINT_SLICE]
    assert len(set(map(id, transactions))) == 1  # one transaction: all slices or none
    for cid in live:
        assert _usage(await ledger.get_call(cid)) == (3_000, T0 + 3_000)
