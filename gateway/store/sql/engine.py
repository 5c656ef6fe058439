"""Async engines for SQLite (run inline) and PostgreSQL (asyncpg), and transaction helpers.

SQLite runs on the event loop's own thread through :mod:`gateway.store.sql.inline_sqlite`
(a URL's ``sqlite`` or ``sqlite+aiosqlite`` scheme selects it: no statement waits for a
worker thread's hand-off). SQLite needs care to give real transactions (SQLAlchemy docs,
"Serializable isolation / Savepoints / Transactional DDL" for pysqlite): the driver's own
implicit ``BEGIN`` is switched off and we emit ``BEGIN`` ourselves, ``BEGIN IMMEDIATE``
for write transactions. A write transaction therefore takes SQLite's write lock up front,
so a read-then-write never fails with ``SQLITE_BUSY`` half way. WAL lets readers (the
call-answer lookups) run beside a writer.

Writers of one process take turns on an asyncio lock before they touch SQLite (one per
database file and event loop, first come first served). SQLite has a single writer
anyway, but its busy handler makes the others *sleep* and retry (1, 2, 5, 10 ... 100 ms
steps, ``sqliteDefaultBusyCallback`` in sqlite3's main.c), on the loop's own thread now:
a writer that met its own process's lock there would stall every call and could never
be let in. The lock hands the write lock over in order, at once. ``busy_timeout`` still covers other
processes on the same file (``rymi-gateway admin``). PostgreSQL has row locks: no turn.

Every engine is created with ``hide_parameters=True``: bound values (account ids, key
hashes, ciphertexts) never appear in SQLAlchemy's error messages or echo logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.errors import StateError
from gateway.store.sql import inline_sqlite

__all__ = [
    "create_engine",
    "db_errors",
    "insert_ignore",
    "read_tx",
    "wall_clock_ms",
    "write_tx",
]

_SQLITE_BUSY_TIMEOUT_MS = 10_000
_WRITE_OPTION = "rymi_write"

_WriterTurns = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
_SQLITE_FILES: weakref.WeakKeyDictionary[sa.Engine, str] = weakref.WeakKeyDictionary()
"""Each SQLite engine's database file (``:memory:`` databases: one per engine)."""
_WRITER_TURNS: dict[str, _WriterTurns] = {}
"""Per SQLite database file, the writers' lock of each event loop it is used on (see the
module doc). Per file, not per engine: two engines on one file in one process (instances
of a fleet in a test, the reaper's) would otherwise wait for each other in SQLite's busy
handler, which inline SQLite runs on the loop's own thread, so the holder could never
finish its transaction."""


def create_engine(url: str) -> AsyncEngine:
    """Create an async engine; SQLite gets WAL, foreign keys and explicit transactions.

    For a SQLite file the parent directory is created if missing.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        parsed = parsed.set(drivername=inline_sqlite.DRIVER)
    engine = create_async_engine(parsed, hide_parameters=True, pool_pre_ping=False)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        _configure_sqlite(engine)
        _SQLITE_FILES[engine.sync_engine] = _database_file(parsed.database, engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see module doc)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextlib.contextmanager
def db_errors(operation: str) -> Iterator[None]:
    """Turn driver failures into :class:`StateError` (the driver error is ``__cause__``).

    The message names the operation and the error class only: driver messages can quote
    the statement's values.
    """
    try:
        yield
    except (sa.exc.DBAPIError, sa.exc.TimeoutError, sa.exc.DisconnectionError) as exc:
        # Only backend failures: a programming error (bad statement) must surface as is.
        orig = getattr(exc, "orig", None) or exc
        raise StateError(f"{operation}: database error ({type(orig).__name__})") from exc
    except OSError as exc:
        raise StateError(f"{operation}: database unreachable ({type(exc).__name__})") from exc


@contextlib.asynccontextmanager
async def write_tx(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that will write: committed on success, rolled back on any error.

    On SQLite it waits for this process's earlier writers first (see the module doc).
    """
    async with _writer_turn(engine), _connected(engine) as conn:
        conn = await conn.execution_options(**{_WRITE_OPTION: True})
        async with conn.begin():
            yield conn


def _database_file(database: str | None, engine: AsyncEngine) -> str:
    if not database or database == ":memory:":
        return f":memory:{id(engine.sync_engine)}"
    return str(Path(database).resolve())


def _writer_turn(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[object]:
    database = _SQLITE_FILES.get(engine.sync_engine)
    if database is None:
        return contextlib.nullcontext()
    turns = _WRITER_TURNS.setdefault(database, weakref.WeakKeyDictionary())
    loop = asyncio.get_running_loop()
    lock = turns.get(loop)
    if lock is None:
        lock = turns[loop] = asyncio.Lock()
    return lock


@contextlib.asynccontextmanager
async def read_tx(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction (a consistent snapshot on both backends)."""
    async with _connected(engine) as conn, conn.begin():
        yield conn


@contextlib.asynccontextmanager
async def _connected(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    if engine.sync_engine not in _SQLITE_FILES:
        # PostgreSQL: giving the connection back can wait on the network, so SQLAlchemy's
        # context manager runs it in a task of its own that a cancellation cannot cut short.
        async with engine.connect() as conn:
            yield conn
        return
    # SQLite runs inline (gateway/store/sql/inline_sqlite.py): the close never suspends,
    # so nothing can cancel it half way, and the task (three turns of a busy loop while
    # this writer holds its turn) is not needed.
    conn = await engine.connect()
    try:
        yield conn
    finally:
        await conn.close()


def wall_clock_ms() -> int:
    """Wall-clock time in integer milliseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1_000_000


async def insert_ignore(conn: AsyncConnection, table: sa.Table, values: dict[str, Any]) -> bool:
    """``INSERT ... ON CONFLICT DO NOTHING``; returns whether the row was inserted."""
    key = (conn.dialect.name, table)
    stmt = _INSERTS_IGNORING.get(key)
    if stmt is None:
        insert = postgresql.insert if key[0] == "postgresql" else sqlite.insert
        stmt = _INSERTS_IGNORING[key] = insert(table).on_conflict_do_nothing()
    result = await conn.execute(stmt, values)  # the columns are the keys of ``values``
    return bool(result.rowcount == 1)


_INSERTS_IGNORING: dict[tuple[str, sa.Table], Any] = {}
"""``insert_ignore``'s statement per dialect and table, built once (call set-up runs it)."""
