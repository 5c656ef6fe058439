"""Public API: carrier account name/country, API key last use, billing alert settings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Upgrade the schema (additive only: new nullable columns and one new table)."""
    op.add_column(
        "carrier_credentials", sa.Column("account_name", sa.String(length=200), nullable=True)
    )
    op.add_column(
        "carrier_credentials", sa.Column("account_country", sa.String(length=8), nullable=True)
    )
    op.add_column("api_keys", sa.Column("last_used_at_ms", sa.BigInteger(), nullable=True))
    op.create_table(
        "billing_alerts",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("thresholds_micros", sa.Text(), nullable=False),
        sa.Column("low_balance_pct", sa.Integer(), nullable=True),
        sa.Column("email_enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "low_balance_pct BETWEEN 1 AND 100", name=op.f("ck_billing_alerts_low_balance_pct")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_billing_alerts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_billing_alerts")),
    )


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_table("billing_alerts")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at_ms")
    with op.batch_alter_table("carrier_credentials") as batch:
        batch.drop_column("account_country")
        batch.drop_column("account_name")
