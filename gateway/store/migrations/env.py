"""Alembic environment: runs on a connection handed over by :mod:`gateway.store.sql.migrate`.

Migrations are only ever run through ``rymi-gateway db upgrade`` (or the same function in
tests), which opens the engine with the gateway's own settings (SQLite pragmas included)
and passes a synchronous connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from gateway.store.sql.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running alembic by hand
    raise SystemExit("run migrations with `rymi-gateway db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table (alembic "batch").
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
