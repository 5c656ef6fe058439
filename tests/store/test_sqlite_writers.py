"""SQLite writers of one process take turns in arrival order (gateway/store/sql/engine.py).

Without the turn, a writer that finds the write lock taken sleeps in SQLite's busy
handler and retries, so later arrivals can overtake it; with ``busy_timeout`` at 0 it
fails outright with "database is locked".
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.sql.engine import create_engine, read_tx, write_tx

WRITERS = 30


def _no_busy_wait(engine: AsyncEngine) -> None:
    """Make SQLite refuse a taken write lock at once instead of sleeping on it."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()


async def _table(engine: AsyncEngine) -> None:
    async with write_tx(engine) as conn:
        await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (i INTEGER NOT NULL)")


async def _writer(engine: AsyncEngine, i: int, granted: list[int]) -> None:
    async with write_tx(engine) as conn:
        granted.append(i)
        await conn.execute(sa.text("INSERT INTO t (i) VALUES (:i)"), {"i": i})
        await asyncio.sleep(0.001)  # hold the write lock across a turn of the loop


async def _race(engine: AsyncEngine) -> list[int]:
    granted: list[int] = []
    await asyncio.gather(*(_writer(engine, i, granted) for i in range(WRITERS)))
    return granted


async def _rows(engine: AsyncEngine) -> list[int]:
    async with read_tx(engine) as conn:
        result = await conn.exec_driver_sql("SELECT i FROM t ORDER BY rowid")
        return [row[0] for row in result]


async def test_concurrent_writers_are_served_in_arrival_order(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        await _table(engine)
        granted = await _race(engine)
        assert granted == list(range(WRITERS))
        assert await _rows(engine) == list(range(WRITERS))
    finally:
        await engine.dispose()


async def test_no_writer_meets_a_taken_write_lock(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    _no_busy_wait(engine)
    try:
        await _table(engine)
        await _race(engine)  # "database is locked" here if two writers overlapped
        assert sorted(await _rows(engine)) == list(range(WRITERS))
    finally:
        await engine.dispose()


def test_one_engine_serves_writers_on_successive_event_loops(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    asyncio.run(_table(engine))
    first = asyncio.run(_race(engine))
    second = asyncio.run(_race(engine))
    asyncio.run(engine.dispose())
    assert first == second == list(range(WRITERS))


async def test_a_failed_writer_hands_the_turn_on(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        await _table(engine)

        async def failing() -> None:
            async with write_tx(engine) as conn:
                await conn.execute(sa.text("INSERT INTO t (i) VALUES (:i)"), {"i": -1})
                raise LookupError("boom")

        results = await asyncio.gather(failing(), _race(engine), return_exceptions=True)
        assert isinstance(results[0], LookupError)
        assert await _rows(engine) == list(range(WRITERS))  # the failed insert rolled back
    finally:
        await engine.dispose()


async def test_writers_of_two_engines_on_one_file_take_turns_too(tmp_path: Path) -> None:
    # Inline SQLite sleeps in the busy handler on the loop's own thread: were the turn per
    # engine, a writer of one engine would wait there for a holder of the other engine
    # that cannot go on until it returns.
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engines = [create_engine(url), create_engine(f"sqlite+aiosqlite:///{tmp_path}/./w.db")]
    for engine in engines:
        _no_busy_wait(engine)
    try:
        await _table(engines[0])
        granted: list[int] = []
        await asyncio.gather(*(_writer(engines[i % 2], i, granted) for i in range(WRITERS)))
        assert granted == list(range(WRITERS))
        assert await _rows(engines[1]) == list(range(WRITERS))
    finally:
        for engine in engines:
            await engine.dispose()
