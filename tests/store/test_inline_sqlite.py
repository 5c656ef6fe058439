"""SQLite statements run on the event loop's own thread (gateway/store/sql/inline_sqlite.py).

A thread-bound driver hands every DBAPI call to its worker and waits for the loop's next
turn to get the answer back, so under load a short transaction lasted as many loop turns
as it had hand-offs (hundreds here, with a loop that is never idle). Inline, each
statement yields exactly one turn, so due media goes first, and nothing else does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import StateError
from gateway.store.sql import inline_sqlite
from gateway.store.sql.engine import create_engine, db_errors, read_tx, write_tx


class LoopTurns:
    """Counts the loop's turns: a callback that schedules itself again each time."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def test_each_statement_takes_one_turn_of_the_loop_and_nothing_else_does(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    try:
        async with write_tx(engine) as conn:  # connects: the first use opens the file
            await conn.exec_driver_sql("CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT)")
        turns = LoopTurns()
        async with write_tx(engine) as conn:
            await conn.execute(sa.text("INSERT INTO t (s) VALUES (:s)"), [{"s": "a"}, {"s": "b"}])
            await conn.execute(sa.text("UPDATE t SET s = 'c' WHERE i = 2"))
            in_write = turns.count
        turns.stop()  # (the write's commit waits for its thread: turns go on meanwhile)
        turns = LoopTurns()
        async with read_tx(engine) as conn:
            rows = (await conn.execute(sa.text("SELECT i, s FROM t ORDER BY i"))).all()
        turns.stop()
        assert [tuple(r) for r in rows] == [(1, "a"), (2, "c")]
        # BEGIN IMMEDIATE, INSERT (one executemany), UPDATE; BEGIN, SELECT. Connecting,
        # the read's COMMIT, reading the rows and giving the connection back take none.
        assert (in_write, turns.count) == (3, 2)
    finally:
        await engine.dispose()


async def test_statements_run_on_the_loop_thread(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'thread.db'}")
    seen: list[int] = []

    def where_am_i() -> int:
        seen.append(threading.get_ident())
        return 1

    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            raw.driver_connection.create_function("where_am_i", 0, where_am_i)  # type: ignore[union-attr]
            assert (await conn.execute(sa.text("SELECT where_am_i()"))).scalar_one() == 1
        assert seen == [threading.get_ident()]
    finally:
        await engine.dispose()


async def _insert_twice(engine: AsyncEngine) -> None:
    with db_errors("insert twice"):
        async with write_tx(engine) as conn:
            await conn.execute(sa.text("INSERT INTO t (i) VALUES (1)"))
            await conn.execute(sa.text("INSERT INTO t (i) VALUES (1)"))  # primary key


async def test_a_failing_statement_rolls_back_and_is_a_state_error(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fail.db'}")
    try:
        async with write_tx(engine) as conn:
            await conn.exec_driver_sql("CREATE TABLE t (i INTEGER PRIMARY KEY)")
        with pytest.raises(StateError, match="insert twice: database error"):
            await _insert_twice(engine)
        async with read_tx(engine) as conn:
            count = (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar_one()
        assert count == 0  # the first insert went with the transaction
    finally:
        await engine.dispose()


async def _finished_despite_a_cancel(turns: int | None, work: Coroutine[Any, Any, None]) -> bool:
    """Run ``work``, cancel it after ``turns`` turns of the loop (None: once it is done);
    whether it had finished."""
    task = asyncio.create_task(work)
    if turns is None:
        await asyncio.wait([task])
    for _ in range(turns or 0):
        await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return False
    return True


async def _writes(engine: AsyncEngine, values: Sequence[int]) -> None:
    async with write_tx(engine) as conn:
        for value in values:
            await conn.execute(sa.text("INSERT INTO t (i) VALUES (:i)"), {"i": value})


async def _column(engine: AsyncEngine) -> list[int]:
    async with read_tx(engine) as conn:
        return list((await conn.execute(sa.text("SELECT i FROM t ORDER BY i"))).scalars())


@pytest.fixture
async def table_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a file holding ``t (i INTEGER)``, disposed after the test."""
    engine = create_engine(f"sqlite:///{tmp_path / 'writers.db'}")
    try:
        async with write_tx(engine) as conn:
            await conn.exec_driver_sql("CREATE TABLE t (i INTEGER)")
        yield engine
    finally:
        await engine.dispose()


async def test_a_writer_cancelled_between_statements_leaves_nothing_behind(
    table_engine: AsyncEngine,
) -> None:
    for turns in range(1, 8):  # cancelled at each of its statements' turns
        assert not await _finished_despite_a_cancel(turns, _writes(table_engine, range(10)))
    async with asyncio.timeout(5):  # a writer's turn never given back would hang here
        await _writes(table_engine, range(3))
    assert await _column(table_engine) == [0, 1, 2]
    assert table_engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_cancelled_writer_is_rolled_back_and_a_finished_one_committed(
    table_engine: AsyncEngine,
) -> None:
    finished = [
        k
        for k, turns in enumerate([*range(1, 9), None], 1)  # before, during, after; never
        if await _finished_despite_a_cancel(turns, _writes(table_engine, [k, 100 + k]))
    ]
    assert 0 < len(finished) < 9  # some were cut short, some were not
    column = await _column(table_engine)
    # Every finished writer committed, and every writer's rows are there whole or not at
    # all. One cancelled while its commit was under way (on the committer thread) is
    # committed too: as with any database across a connection, a cancelled commit may
    # have happened, and the commit is waited out rather than abandoned.
    firsts = [v for v in column if v < 100]
    assert set(finished) <= set(firsts)
    assert sorted(column) == sorted([*firsts, *(v + 100 for v in firsts)])


class GatedDisk:
    """A disk whose write commits wait at a gate (a busy host's ``fsync``: 100 ms to 1 s
    was seen), injected where SQLite's commit runs.

    A write's commit announces itself on the loop (:attr:`started`) and waits for
    :attr:`gate` to open, giving up after :data:`GATE_WAIT_S`. The gate is opened by a
    coroutine, so it opens only if the loop keeps running while the commit waits: a
    commit on the loop's own thread blocks the loop and waits the full time out.
    """

    GATE_WAIT_S = 2.0

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[int] = []
        self.started = asyncio.Event()
        self.gate = threading.Event()
        self.opened_in_time: list[bool] = []
        loop = asyncio.get_running_loop()
        original = inline_sqlite._FileConnection.commit

        def gated_commit(conn: inline_sqlite._FileConnection) -> None:
            self.threads.append(threading.get_ident())
            if conn.total_changes != conn.changes_at_begin:  # a write's commit
                loop.call_soon_threadsafe(self.started.set)
                self.opened_in_time.append(self.gate.wait(self.GATE_WAIT_S))
            original(conn)

        monkeypatch.setattr(inline_sqlite._FileConnection, "commit", gated_commit)

    async def open_when_started(self) -> None:
        """Open the gate once a commit waits at it (runs only while the loop runs)."""
        await self.started.wait()
        self.gate.set()


async def test_a_slow_disk_does_not_hold_up_the_loop(
    table_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = GatedDisk(monkeypatch)
    opener = asyncio.create_task(disk.open_when_started())
    async with asyncio.timeout(10):
        await _writes(table_engine, [1, 2])
        await opener
    # The loop ran while the commit waited for the disk: it opened the gate. Inline,
    # the loop stood still for the whole wait and the gate opened late (False).
    assert disk.opened_in_time
    assert all(disk.opened_in_time)
    assert await _column(table_engine) == [1, 2]
    assert disk.threads[0] != threading.get_ident()  # the committer thread
    # A read's commit has nothing to make durable: it stays inline.
    disk.threads.clear()
    await _column(table_engine)
    assert disk.threads == [threading.get_ident()]


async def test_a_writer_cancelled_during_its_commit_waits_for_it(
    table_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = GatedDisk(monkeypatch)
    writer = asyncio.create_task(_writes(table_engine, [7, 8]))
    async with asyncio.timeout(5):
        await disk.started.wait()  # its commit is under way on the committer thread
    writer.cancel()
    await asyncio.sleep(0.01)  # the cancellation reaches the writer mid-commit
    disk.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert disk.opened_in_time == [True]
    # The commit was waited out: done, and the connection was not closed under it.
    assert await _column(table_engine) == [7, 8]
    async with asyncio.timeout(5):  # the writers' turn was given back
        await _writes(table_engine, [9])
    assert await _column(table_engine) == [7, 8, 9]
    assert table_engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
