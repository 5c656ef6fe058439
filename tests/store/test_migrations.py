"""Migrations: the packaged Alembic scripts build exactly the schema the code queries."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.errors import StateError
from gateway.store.sql import schema
from gateway.store.sql.migrate import current_revision, head_revision, upgrade
from gateway.store.sql_state import SqlState
from tests.store.conftest import KEY_A


async def test_database_is_at_the_head_revision(database_url: str) -> None:
    assert await current_revision(database_url) == head_revision()


async def test_upgrade_again_is_a_no_op(database_url: str, engine: AsyncEngine) -> None:
    assert await upgrade(database_url) == head_revision()
    assert await current_revision(database_url) == head_revision()


async def test_migrated_schema_matches_the_table_definitions(engine: AsyncEngine) -> None:
    def diff(conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, schema.metadata))

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


async def test_empty_sqlite_file_has_no_revision_until_upgraded(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/sub/dir/fresh.db"
    assert await current_revision(url) is None
    assert await upgrade(url) == head_revision()
    assert (tmp_path / "sub" / "dir" / "fresh.db").exists()


async def test_sql_state_opens_only_a_migrated_database(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "RYMI_DATA_DIR": str(tmp_path),
            "RYMI_MASTER_KEYS": base64.urlsafe_b64encode(KEY_A).decode(),
        }
    )
    with pytest.raises(StateError, match="run `rymi-gateway db upgrade`"):
        await SqlState.open(settings)
    state = await SqlState.open(settings, migrate=True)
    try:
        tenant = await state.directory.create_tenant("served")
        assert await state.ledger.balance_micros(tenant.id) == 0
    finally:
        await state.close()
    assert not (tmp_path / "master.key").exists()  # configured keys: no dev key file
