"""Outbound dialing and publishable keys: call status ``queued``, ``calls.remote_number``,
publishable-key scoping columns on ``api_keys``.

Widening ``ck_calls_status`` is the one non-additive step. PostgreSQL drops and
re-creates the constraint. SQLite cannot alter a constraint, and the usual rebuild
(copy to a new table, drop, rename) is not safe here: ``calls`` is the parent of
``ledger`` and ``call_transcripts``, and with ``PRAGMA foreign_keys=ON`` (which cannot
be switched off inside the migration's transaction) dropping it would cascade into the
transcripts and fail on the ledger. So SQLite gets the procedure its documentation
gives for schema changes that leave the stored rows valid (sqlite.org/lang_altertable.html,
"Making Other Kinds Of Table Schema Changes"): rewrite the table's ``CREATE`` text in
``sqlite_schema`` under ``writable_schema`` and bump ``schema_version``. Widening a
``CHECK`` list is such a change: every existing row already satisfies the new one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_OLD = "'live', 'completed', 'failed', 'no_answer', 'busy', 'canceled'"
_NEW = "'queued', 'live', 'completed', 'failed', 'no_answer', 'busy', 'canceled'"


def upgrade() -> None:
    """Upgrade the schema."""
    op.add_column("calls", sa.Column("remote_number", sa.String(length=16), nullable=True))
    op.add_column("api_keys", sa.Column("allowed_channels", sa.String(length=32), nullable=True))
    op.add_column("api_keys", sa.Column("audience", sa.String(length=16), nullable=True))
    op.add_column("api_keys", sa.Column("default_from_number", sa.String(length=16), nullable=True))
    _set_status_check(_OLD, _NEW)


def downgrade() -> None:
    """Downgrade the schema (queued calls become failed: the old check refuses them)."""
    op.execute("UPDATE calls SET status = 'failed' WHERE status = 'queued'")
    _set_status_check(_NEW, _OLD)
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("default_from_number")
        batch.drop_column("audience")
        batch.drop_column("allowed_channels")
    # Dropping a column rebuilds the table on SQLite: the same hazard as above, so the
    # column stays there (it is nullable and unused by the older code).
    if op.get_bind().dialect.name != "sqlite":
        op.drop_column("calls", "remote_number")


def _set_status_check(old: str, new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_calls_status"), "calls", type_="check")
        op.create_check_constraint(op.f("ck_calls_status"), "calls", f"status IN ({new})")
        return
    query = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'calls'"
    create = bind.exec_driver_sql(query).scalar_one()
    if create.count(f"status IN ({old})") != 1:
        raise RuntimeError("calls: the status check is not the one this migration expects")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'calls'",
            (create.replace(f"status IN ({old})", f"status IN ({new})"),),
        )
        # A new schema version makes every other connection re-read the schema.
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = bind.exec_driver_sql("PRAGMA integrity_check").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"calls: integrity check failed after the status change: {problems}")
