"""SQLite under the async engine without a thread: sqlite3 runs on the event loop's thread.

SQLAlchemy's ``aiosqlite`` driver runs every DBAPI call (make a cursor, execute, fetch the
rows, close the cursor, commit, roll back) in aiosqlite's worker thread and wakes the loop
for its result: four hand-offs per statement, about eighteen for the call-answer write.
Each waits for the loop's next turn, which with a few hundred calls of live media is
milliseconds: at 200 live calls a write transaction with 1.5 ms of work held SQLite's
write lock for 40 ms (p50; p99 160 ms), writers queued behind it, and during a ramp of 25
calls a second answers waited 2-3 s (docs/performance.md, "fifth pass"). A statement on a
local SQLite file costs tens of microseconds, less than one hand-off.

This dialect is the ``pysqlite`` dialect (the standard library's ``sqlite3``) declared
async, so :func:`sqlalchemy.ext.asyncio.create_async_engine` takes it and the store's
``await conn.execute(...)`` code is unchanged. Each statement yields one turn of the loop
before it runs, so media frames that are due go first and a call's set-up (a dozen
statements of 0.1-1 ms of CPU) is cut into short pieces instead of one long one; connect,
commit and close take no turn. Costs, accepted for a single node's embedded database:

* the loop waits while SQLite works on a statement;
* writers of this process take turns (:mod:`gateway.store.sql.engine`), so the only lock
  wait left is another process's transaction (``rymi-gateway admin``), up to
  ``busy_timeout``.

**The commit of a write runs off the loop**, on one committer thread: it is where the
disk is waited for, the WAL ``fsync`` (``synchronous=FULL``) and, every thousand pages of
WAL, SQLite's automatic checkpoint. On a quiet disk that is 0.13 ms; on a busy host it
was 100 ms to 1.08 s, and inline it froze every live call's media for that long (the
stall watch caught 11 such stalls in an hour's soak, all in ``do_commit``:
docs/performance.md, "eighth pass"). sqlite3 releases the GIL while it works, so the loop
goes on with the media meanwhile. The committing transaction keeps its connection (and
this process's writer turn) until the commit is done, and a cancellation that arrives
meanwhile waits for it: it is passed on only once the worker has finished, so SQLAlchemy
never rolls back or closes a connection that the worker is still committing on. A
transaction that wrote nothing (``total_changes`` unchanged since its ``BEGIN``) and an
in-memory database commit inline: there is no disk to wait for.

A fleet uses PostgreSQL (asyncpg), which this module does not touch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
from typing import Any

from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import DBAPICursor, ExecutionContext
from sqlalchemy.util.concurrency import await_, in_greenlet

__all__ = ["DRIVER", "InlineSQLiteDialect"]

DRIVER = "sqlite+rymi_inline"
"""The SQLAlchemy URL scheme of this dialect (registered on import)."""


class _Cursor(sqlite3.Cursor):
    """``sqlite3``'s cursor, with the hook the async engine calls on every result."""

    async def _async_soft_close(self) -> None:
        # The asyncio extension closes a thread-bound driver's cursor early (its rows were
        # prefetched); here rows are read inline when the caller asks, so the cursor stays
        # open until the result is consumed or closed, as with plain pysqlite.
        return None


class _Connection(sqlite3.Connection):
    """``sqlite3``'s connection, making :class:`_Cursor` cursors."""

    commit_off_loop = False
    """Whether a write's commit runs on the committer thread (file databases)."""
    changes_at_begin = 0
    """``total_changes`` when the transaction began (did it write?)."""

    def cursor(self, factory: Any = _Cursor) -> Any:
        return super().cursor(factory)


class _FileConnection(_Connection):
    """A file database's connection: its writes commit off the loop (module doc)."""

    commit_off_loop = True


_committer: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None


def _committer_pool() -> concurrent.futures.ThreadPoolExecutor:
    """This process's committer: one thread, as this process's writers take turns anyway.

    Made per process: a pool's thread does not survive a fork, and the child's copy would
    believe it does.
    """
    global _committer
    if _committer is None or _committer[0] != os.getpid():
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rymi-commit")
        _committer = (os.getpid(), executor)
    return _committer[1]


async def _commit_waited_out(connection: _Connection) -> None:
    """``connection.commit()`` on the committer thread; a cancellation waits for it."""
    done = asyncio.get_running_loop().run_in_executor(_committer_pool(), connection.commit)
    cancelled = False
    while True:
        try:
            await asyncio.shield(done)
            break
        except asyncio.CancelledError:
            cancelled = True  # (also when it came as the commit ended: never swallowed)
            if done.done() and not done.cancelled():
                break  # the commit itself is over: its outcome is raised below
    if cancelled:
        done.result()  # a failed commit's error first: it says more than the cancellation
        raise asyncio.CancelledError
    done.result()


def _turn_of_the_loop() -> None:
    # Let due media go first (module doc). This also satisfies the async engine's check
    # that the driver awaited something (it catches sync drivers used by mistake,
    # sqlalche.me/e/20/xd1r). Outside a greenlet (the pool's connect-time PRAGMAs) there
    # is no loop to yield to.
    if in_greenlet():
        await_(asyncio.sleep(0))


class InlineSQLiteDialect(SQLiteDialect_pysqlite):
    """``pysqlite`` for the async engine: DBAPI calls run inline (see the module doc)."""

    driver = "rymi_inline"
    is_async = True
    supports_statement_cache = True

    def create_connect_args(self, url: URL) -> Any:
        args, kwargs = super().create_connect_args(url)
        kwargs["factory"] = _FileConnection if self._is_url_file_db(url) else _Connection
        kwargs["check_same_thread"] = False  # the committer thread commits (module doc)
        return args, kwargs

    def do_begin(self, dbapi_connection: Any) -> None:
        dbapi_connection.changes_at_begin = dbapi_connection.total_changes

    def do_commit(self, dbapi_connection: Any) -> None:
        if (
            dbapi_connection.commit_off_loop
            and dbapi_connection.total_changes != dbapi_connection.changes_at_begin
            and in_greenlet()
        ):
            await_(_commit_waited_out(dbapi_connection))
        else:
            dbapi_connection.commit()

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        # The asyncio-aware queue pool: a checkout that must wait awaits instead of
        # blocking the loop's thread. ``:memory:`` keeps one shared connection.
        if cls._is_url_file_db(url):
            return pool.AsyncAdaptedQueuePool
        return pool.StaticPool

    def do_execute(
        self,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None = None,
    ) -> None:
        _turn_of_the_loop()
        cursor.execute(statement, parameters)

    def do_execute_no_params(
        self, cursor: DBAPICursor, statement: str, context: ExecutionContext | None = None
    ) -> None:
        _turn_of_the_loop()
        cursor.execute(statement)

    def do_executemany(
        self,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None = None,
    ) -> None:
        _turn_of_the_loop()
        cursor.executemany(statement, parameters)


registry.register("sqlite.rymi_inline", __name__, "InlineSQLiteDialect")
