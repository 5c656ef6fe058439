"""Run the Alembic migrations shipped inside the package (``gateway/store/migrations``).

The script location is a package resource, so an installed wheel migrates without any
``alembic.ini`` next to it. The engine is the gateway's own (:func:`create_engine`), so
SQLite gets the same pragmas during migration as at run time; Alembic runs on its
synchronous connection inside ``run_sync`` (Alembic cookbook, "Using Asyncio with Alembic",
programmatic use with a shared connection).
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from gateway.errors import StateError
from gateway.store.sql.engine import create_engine, db_errors, write_tx

__all__ = ["alembic_config", "current_revision", "head_revision", "require_head", "upgrade"]

SCRIPT_LOCATION = "gateway.store:migrations"


def alembic_config() -> Config:
    """An Alembic configuration pointing at the packaged migration scripts."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of the gateway."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the package ships at least one migration"
    return head


async def upgrade(database_url: str, revision: str = "head") -> str | None:
    """Migrate the database at ``database_url`` up to ``revision``; returns the new revision.

    Raises:
        StateError: the database cannot be reached or the migration failed.
    """
    engine = create_engine(database_url)
    try:
        with db_errors("migrate"):
            async with write_tx(engine) as conn:
                await conn.run_sync(_upgrade, revision)
                return await conn.run_sync(_current)
    finally:
        await engine.dispose()


async def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None for an empty database."""
    engine = create_engine(database_url)
    try:
        with db_errors("read schema revision"):
            async with engine.connect() as conn:
                return await conn.run_sync(_current)
    finally:
        await engine.dispose()


async def require_head(database_url: str) -> None:
    """Raise unless the database is at this version's schema.

    Raises:
        StateError: unreachable, or behind (or ahead of) this version; says what to run.
    """
    current, head = await current_revision(database_url), head_revision()
    if current != head:
        raise StateError(
            f"database schema is at {current or 'nothing'}, this gateway needs {head}: "
            "run `rymi-gateway db upgrade`"
        )


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
