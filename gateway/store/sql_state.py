"""One handle on the SQL state for the server: engine, directory and ledger, opened once.

The server builds it at start-up from :class:`~gateway.config.Settings` and closes it at
shutdown (an aiohttp ``cleanup_ctx``)::

    state = await SqlState.open(settings)
    try:
        route = await state.directory.resolve_number(number)
        ...
    finally:
        await state.close()

``migrate=True`` runs the packaged migrations first. ``rymi-gateway serve`` on the embedded
SQLite default uses it so a newcomer needs no extra step; a fleet on PostgreSQL should run
``rymi-gateway db upgrade`` once per release instead, so that instances starting together
do not race to migrate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.errors import StateError
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.secrets import Keyring, load_keyring
from gateway.store.sql.engine import create_engine
from gateway.store.sql.migrate import require_head, upgrade

__all__ = ["PING_TIMEOUT_S", "SqlState"]

PING_TIMEOUT_S = 0.5
"""Default bound of :meth:`SqlState.ping`, seconds (readiness probes must stay cheap)."""


@dataclass(frozen=True, slots=True)
class SqlState:
    """The engine and the directory and ledger over it."""

    engine: AsyncEngine
    keyring: Keyring
    directory: Directory
    ledger: Ledger

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = False) -> SqlState:
        """Open the database (migrating it first if asked) and check its revision.

        Raises:
            StateError: unreachable, or not at this version's schema (and not migrating).
            ConfigError: bad master keys.
        """
        if migrate:
            await upgrade(settings.database_url)
        await require_head(settings.database_url)
        keyring = load_keyring(settings)
        engine = create_engine(settings.database_url)
        return cls(engine, keyring, Directory(engine, keyring), Ledger(engine))

    async def ping(self, timeout_s: float = PING_TIMEOUT_S) -> None:
        """``SELECT 1`` on a pooled connection, bounded by ``timeout_s`` (readiness).

        Raises:
            StateError: the database did not answer in time or refused; the driver's
                message is not included (it can hold a URL with a password).
        """
        try:
            async with asyncio.timeout(timeout_s), self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except TimeoutError:
            raise StateError(f"database ping timed out after {timeout_s} s") from None
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            raise StateError(f"database ping failed ({type(exc).__name__})") from None

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
