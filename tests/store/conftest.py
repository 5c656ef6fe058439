"""Backends for the directory and ledger contract suites: SQLite and PostgreSQL.

Every test that takes ``engine`` runs once per backend. Each backend's schema is built
once per session through the same migration path operators use
(:func:`gateway.store.sql.migrate.upgrade`):

* SQLite: a temporary file.
* PostgreSQL: a fresh, uniquely named database on the server named by ``DATABASE_URL``
  (``postgresql+asyncpg://...``) or else the local ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``;
  dropped at the end of the session. When no server answers, the PostgreSQL leg is
  skipped with the reason, and the terminal summary says so in one line.

Tests keep to their own tenants (random ids) and phone numbers, so no cleanup between
tests is needed; "leaves no row behind" checks compare whole-table counts before and after.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.metering import Role
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.models import CallStart
from gateway.store.secrets import Keyring
from gateway.store.sql import schema
from gateway.store.sql.engine import create_engine
from gateway.store.sql.migrate import upgrade

LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
KEY_A = bytes(range(32))
"""The master key every contract test seals with (fixed, so rows stay readable)."""
KEY_B = bytes(range(100, 132))
"""An older key, still configured: the rotation test seals with it, then rotates to A."""

_postgres_status: list[str] = []


async def _admin(admin_url: str, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    engine = create_async_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 3}
    )
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def _create_database(admin_url: str, name: str) -> None:
    await _admin(admin_url, f'CREATE DATABASE "{name}"')


async def _drop_database(admin_url: str, name: str) -> None:
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh migrated PostgreSQL database for this session, or a loud skip."""
    admin_url = os.environ.get("DATABASE_URL") or LOCAL_POSTGRES
    shown = make_url(admin_url).render_as_string(hide_password=True)
    name = f"rymi_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        asyncio.run(_create_database(admin_url, name))
    except (OSError, TimeoutError, sa.exc.DBAPIError) as exc:
        reason = f"PostgreSQL leg SKIPPED: no server at {shown} ({type(exc).__name__}: {exc})"
        _postgres_status.append(reason + "; set DATABASE_URL=postgresql+asyncpg://...")
        pytest.skip(reason)
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    _postgres_status.append(f"PostgreSQL leg ran against {shown} (database {name})")
    try:
        asyncio.run(upgrade(url))
        yield url
    finally:
        asyncio.run(_drop_database(admin_url, name))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file for this session."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite')}/rymi.db"
    asyncio.run(upgrade(url))
    return url


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest) -> str:
    """The migrated database of each backend in turn."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the backend under test (per test: engines belong to one event loop)."""
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def keyring() -> Keyring:
    """Seals with KEY_A, opens A and B."""
    return Keyring((KEY_A, KEY_B))


@pytest.fixture
def directory(engine: AsyncEngine, keyring: Keyring) -> Directory:
    """The directory on the backend under test."""
    return Directory(engine, keyring)


@pytest.fixture
def ledger(engine: AsyncEngine) -> Ledger:
    """The ledger on the backend under test."""
    return Ledger(engine)


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    """Rows in every table (to prove a refused operation wrote nothing)."""
    counts: dict[str, int] = {}
    async with engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            query = sa.select(sa.func.count()).select_from(table)
            counts[table.name] = int((await conn.execute(query)).scalar_one())
    return counts


_numbers = itertools.count(secrets.randbelow(9 * 10**6))


def random_number() -> str:
    """A fresh E.164 number in the +1 555 range, never repeated within the session."""
    return f"+1555{next(_numbers):07d}"


def new_call_id() -> str:
    """A fresh call id."""
    return f"call-{uuid.uuid4()}"


async def open_live_calls(
    directory: Directory, ledger: Ledger, count: int, *, answered_at_ms: int, carrier: str
) -> list[str]:
    """``count`` live calls of a new tenant, answered at ``answered_at_ms``; their ids."""
    tenant = await directory.create_tenant(f"live {uuid.uuid4().hex[:6]}")
    ids = []
    for _ in range(count):
        start = CallStart(
            call_id=new_call_id(),
            tenant_id=tenant.id,
            agent_id=str(uuid.uuid4()),
            number=random_number(),
            carrier=carrier,
            role=Role.OPERATOR,
            max_call_duration_s=600,
            answered_at_ms=answered_at_ms,
        )
        await ledger.open_call(start)
        ids.append(start.call_id)
    return ids


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say in one line whether the PostgreSQL leg ran."""
    for line in _postgres_status:
        terminalreporter.write_line(line, yellow="SKIPPED" in line, bold=True)
