"""The checkpoint batcher: merged per call, written in batches, retried, flushed at close.

Against the real ledger on SQLite and PostgreSQL (the store suites' fixtures). A database
failure is real: the ``calls`` table is renamed away, so every write fails in the
database, then renamed back. Only the hang at shutdown uses a stand-in sink (a database
that never answers cannot be cancelled cleanly on every backend).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ValidationError
from gateway.metrics import GatewayMetrics
from gateway.server.checkpoints import CheckpointBatcher
from gateway.store.directory import Directory
from gateway.store.ledger import CheckpointItem, Ledger
from gateway.store.models import CallEnd, CallRecord, CallStatus
from gateway.store.sql.engine import create_engine, write_tx
from tests.ops.promtext import scrape, value
from tests.server.harness import running_gateway
from tests.store.conftest import (
    database_url,
    directory,
    engine,
    keyring,
    ledger,
    open_live_calls,
    postgres_url,
    sqlite_url,
)

__all__ = [  # the store suites' fixtures, used here
    "database_url",
    "directory",
    "engine",
    "keyring",
    "ledger",
    "postgres_url",
    "sqlite_url",
]

T0 = 1_700_000_000_000


async def _live_calls(directory: Directory, ledger: Ledger, count: int) -> list[str]:
    return await open_live_calls(directory, ledger, count, answered_at_ms=T0, carrier="twilio")


async def _usage(ledger: Ledger, call_id: str) -> tuple[int, int | None]:
    record = await ledger.get_call(call_id)
    return record.audio_ms, record.checkpoint_at_ms


async def _eventually(check: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _calls_table_missing(engine: AsyncEngine) -> AsyncIterator[None]:
    """Every checkpoint write fails in the database until the block ends."""
    async with write_tx(engine) as conn:
        await conn.exec_driver_sql("ALTER TABLE calls RENAME TO calls_away")
    try:
        yield
    finally:
        async with write_tx(engine) as conn:
            await conn.exec_driver_sql("ALTER TABLE calls_away RENAME TO calls")


async def test_checkpoints_of_a_call_merge_to_their_high_water_mark(
    directory: Directory, ledger: Ledger
) -> None:
    one, two = await _live_calls(directory, ledger, 2)
    batcher = CheckpointBatcher(ledger)
    batcher.submit(one, 5_000, T0 + 5_000)
    batcher.submit(one, 10_000, T0 + 10_000)
    batcher.submit(one, 8_000, T0 + 9_000)  # older, arrived late: changes nothing
    batcher.submit(two, 3_000, T0 + 3_000)
    assert batcher.pending == 2
    assert await batcher.flush()
    assert (batcher.pending, batcher.written) == (0, 2)
    assert await _usage(ledger, one) == (10_000, T0 + 10_000)
    assert await _usage(ledger, two) == (3_000, T0 + 3_000)
    assert await batcher.flush()  # nothing pending: nothing written
    assert batcher.written == 2


async def test_the_flush_task_writes_every_interval_and_records_it(
    directory: Directory, ledger: Ledger
) -> None:
    calls = await _live_calls(directory, ledger, 3)
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    async with CheckpointBatcher(ledger, flush_interval_s=0.05, metrics=metrics) as batcher:
        for i, call_id in enumerate(calls):
            batcher.submit(call_id, 1_000 * (i + 1), T0 + 1_000)
        await _eventually(lambda: batcher.written == 3)
        assert [await _usage(ledger, c) for c in calls] == [
            (1_000, T0 + 1_000),
            (2_000, T0 + 1_000),
            (3_000, T0 + 1_000),
        ]
        batcher.submit(calls[0], 6_000, T0 + 6_000)  # the next interval's checkpoint
        await _eventually(lambda: batcher.written == 4)
        assert await _usage(ledger, calls[0]) == (6_000, T0 + 6_000)
    samples = scrape(registry)
    assert value(samples, "gateway_checkpoints_written_total") == 4
    assert value(samples, "gateway_checkpoint_flush_seconds_count") == 2
    assert value(samples, "gateway_checkpoint_flush_failures_total") == 0


async def test_many_pending_calls_flush_before_the_interval(
    directory: Directory, ledger: Ledger
) -> None:
    calls = await _live_calls(directory, ledger, 3)
    async with CheckpointBatcher(ledger, flush_interval_s=5.0, max_pending=3) as batcher:
        await asyncio.sleep(0.05)  # the task waits out its first interval
        started = time.monotonic()
        for call_id in calls:
            batcher.submit(call_id, 2_000, T0 + 2_000)
        await _eventually(lambda: batcher.written == 3, timeout_s=2.0)
        assert time.monotonic() - started < 2.0
    assert await _usage(ledger, calls[2]) == (2_000, T0 + 2_000)


async def test_a_failed_flush_is_counted_logged_and_retried_newest_first(
    directory: Directory,
    ledger: Ledger,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.server")
    one, two = await _live_calls(directory, ledger, 2)
    registry = CollectorRegistry()
    batcher = CheckpointBatcher(ledger, metrics=GatewayMetrics(registry))
    async with _calls_table_missing(engine):
        batcher.submit(one, 5_000, T0 + 5_000)
        batcher.submit(two, 5_000, T0 + 5_000)
        assert not await batcher.flush()
        batcher.submit(one, 10_000, T0 + 10_000)  # newer, while the database is away
        batcher.submit(two, 4_000, T0 + 4_000)  # older than the failed one: the max stays
        assert batcher.pending == 2
        assert not await batcher.flush()
    assert (batcher.failures, batcher.written) == (2, 0)
    assert await _usage(ledger, one) == (0, None)  # nothing was written meanwhile
    assert await batcher.flush()
    assert await _usage(ledger, one) == (10_000, T0 + 10_000)
    assert await _usage(ledger, two) == (5_000, T0 + 5_000)
    assert value(scrape(registry), "gateway_checkpoint_flush_failures_total") == 2
    lines = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert len(lines) == 2
    # The error's class and the operation, never values; the pause doubles while failing.
    assert lines[0].startswith("checkpoints of 2 calls not written (checkpoint: database error")
    assert [line.rsplit("; ", 1)[1] for line in lines] == [
        "retrying in 1.00 s",  # the flush interval, then doubling
        "retrying in 2.00 s",
    ]
    assert not any(one in line or two in line for line in lines)


async def test_the_flush_task_retries_until_the_database_is_back(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    (call_id,) = await _live_calls(directory, ledger, 1)
    async with CheckpointBatcher(ledger, flush_interval_s=0.02) as batcher:
        async with _calls_table_missing(engine):
            batcher.submit(call_id, 7_000, T0 + 7_000)
            await _eventually(lambda: batcher.failures >= 2)
            assert batcher.pending == 1
        await _eventually(lambda: batcher.written == 1)
    assert await _usage(ledger, call_id) == (7_000, T0 + 7_000)


async def test_close_writes_what_is_pending_and_later_checkpoints_are_dropped(
    directory: Directory, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    (call_id,) = await _live_calls(directory, ledger, 1)
    batcher = CheckpointBatcher(ledger, flush_interval_s=5.0)
    batcher.start()
    await asyncio.sleep(0)  # the task is waiting out its interval
    batcher.submit(call_id, 4_000, T0 + 4_000)
    await batcher.close()
    assert (batcher.pending, batcher.written) == (0, 1)
    assert await _usage(ledger, call_id) == (4_000, T0 + 4_000)
    with caplog.at_level(logging.WARNING, logger="gateway.server"):
        batcher.submit(call_id, 9_000, T0 + 9_000)
    assert f"call {call_id}: checkpoint after shutdown not written" in caplog.messages
    assert batcher.pending == 0
    assert await _usage(ledger, call_id) == (4_000, T0 + 4_000)


async def test_a_checkpoint_after_the_final_record_changes_nothing(
    directory: Directory, ledger: Ledger
) -> None:
    (call_id,) = await _live_calls(directory, ledger, 1)
    batcher = CheckpointBatcher(ledger)
    batcher.submit(call_id, 20_000, T0 + 21_000)
    assert await batcher.flush()
    end = CallEnd(call_id, CallStatus.COMPLETED, "caller_hangup", T0 + 31_000, 30_000)
    final = (await ledger.finalize(end)).record
    # Still pending when the call ended, written after its final record: harmless.
    batcher.submit(call_id, 45_000, T0 + 46_000)
    assert await batcher.flush()
    assert await ledger.get_call(call_id) == final
    assert (final.status, final.audio_ms, final.checkpoint_at_ms) == (
        CallStatus.COMPLETED,
        30_000,
        T0 + 21_000,
    )


async def test_a_malformed_checkpoint_is_refused_at_submit(ledger: Ledger) -> None:
    batcher = CheckpointBatcher(ledger)
    for bad in (("call", -1, T0), ("call", 1, None), ("", 1, T0)):
        with pytest.raises(ValidationError):
            batcher.submit(*bad)
    assert batcher.pending == 0


class _NeverAnswers:
    """A sink whose database never answers (the stand-in for a hung connection)."""

    def __init__(self) -> None:
        self.calls: list[list[CheckpointItem]] = []

    async def checkpoint_many(self, items: list[CheckpointItem]) -> None:
        self.calls.append(items)
        await asyncio.Event().wait()


async def test_close_is_bounded_when_the_database_hangs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = _NeverAnswers()
    batcher = CheckpointBatcher(sink, flush_interval_s=0.01)
    batcher.start()
    batcher.submit("call-1", 1_000, T0)
    await _eventually(lambda: bool(sink.calls))
    batcher.submit("call-1", 2_000, T0 + 1_000)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="gateway.server"):
        await batcher.close(timeout_s=0.2)
    assert time.monotonic() - started < 1.0
    # The cancelled write's checkpoint went back to pending, merged with the newer one.
    assert batcher.pending == 1
    assert "checkpoints of 1 calls not written at shutdown" in caplog.messages


async def test_the_gateway_runs_one_batcher_and_flushes_it_at_shutdown(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        state = gw.engine.state
        (call_id,) = await open_live_calls(
            state.directory, state.ledger, 1, answered_at_ms=T0, carrier="twilio"
        )
        batcher = gw.engine.checkpoints
        batcher.submit(call_id, 3_000, T0 + 3_000)
    assert batcher.pending == 0
    engine = create_engine(gw.settings.database_url)
    try:
        record: CallRecord = await Ledger(engine).get_call(call_id)
    finally:
        await engine.dispose()
    assert (record.audio_ms, record.checkpoint_at_ms) == (3_000, T0 + 3_000)
