"""Initial schema: directory (tenants, agents, keys, credentials, numbers) and ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("max_concurrent_calls", sa.Integer(), nullable=True),
        sa.Column("active_carrier", sa.String(length=16), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "active_carrier IN ('twilio', 'plivo', 'vonage')",
            name=op.f("ck_tenants_active_carrier"),
        ),
        sa.CheckConstraint(
            "max_concurrent_calls >= 0", name=op.f("ck_tenants_max_concurrent_calls")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("max_call_duration_s", sa.Integer(), nullable=False),
        sa.Column("pipeline", sa.String(length=2048), nullable=False),
        sa.Column("secret_key_id", sa.String(length=16), nullable=True),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("barge_in", sa.String(length=16), nullable=False),
        sa.Column("extra", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "role IN ('operator', 'specialist', 'executive', 'concierge')",
            name=op.f("ck_agents_role"),
        ),
        sa.CheckConstraint(
            "max_call_duration_s BETWEEN 30 AND 7200", name=op.f("ck_agents_max_call_duration_s")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_agents_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
    )
    op.create_index(op.f("ix_agents_tenant_id"), "agents", ["tenant_id"])

    op.create_table(
        "calls",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("carrier_call_id", sa.String(length=128), nullable=True),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=True),
        sa.Column("number", sa.String(length=16), nullable=False),
        sa.Column("carrier", sa.String(length=16), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("max_call_duration_s", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("answered_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("media_started_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("checkpoint_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("ended_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("end_reason", sa.String(length=64), nullable=True),
        sa.Column("audio_ms", sa.BigInteger(), nullable=False),
        sa.Column("billable_units", sa.Integer(), nullable=True),
        sa.Column("cost_micros", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("direction IN ('inbound', 'outbound')", name=op.f("ck_calls_direction")),
        sa.CheckConstraint(
            "role IN ('operator', 'specialist', 'executive', 'concierge')",
            name=op.f("ck_calls_role"),
        ),
        sa.CheckConstraint(
            "status IN ('live', 'completed', 'failed', 'no_answer', 'busy', 'canceled')",
            name=op.f("ck_calls_status"),
        ),
        sa.CheckConstraint("audio_ms >= 0", name=op.f("ck_calls_audio_ms")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_calls_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
        sa.UniqueConstraint(
            "carrier", "carrier_call_id", name=op.f("uq_calls_carrier_carrier_call_id")
        ),
    )
    op.create_index(
        op.f("ix_calls_status_checkpoint_at_ms"), "calls", ["status", "checkpoint_at_ms"]
    )
    op.create_index(
        op.f("ix_calls_tenant_id_answered_at_ms"), "calls", ["tenant_id", "answered_at_ms"]
    )

    op.create_table(
        "carrier_credentials",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("carrier", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("secret_key_id", sa.String(length=16), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "carrier IN ('twilio', 'plivo', 'vonage')", name=op.f("ck_carrier_credentials_carrier")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_carrier_credentials_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "carrier", name=op.f("pk_carrier_credentials")),
    )
    op.create_index(
        op.f("ix_carrier_credentials_carrier_account_id"),
        "carrier_credentials",
        ["carrier", "account_id"],
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("agent_id", sa.String(length=36), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at_ms", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("kind IN ('secret', 'publishable')", name=op.f("ck_api_keys_kind")),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_api_keys_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_api_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"])

    op.create_table(
        "call_transcripts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("speaker", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "speaker IN ('caller', 'agent')", name=op.f("ck_call_transcripts_speaker")
        ),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["calls.id"],
            name=op.f("fk_call_transcripts_call_id_calls"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_transcripts")),
    )
    op.create_index(op.f("ix_call_transcripts_call_id"), "call_transcripts", ["call_id"])

    op.create_table(
        "ledger",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=True),
        sa.Column("memo", sa.String(length=200), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(kind = 'call' AND call_id IS NOT NULL AND amount_micros <= 0)"
            " OR (kind = 'topup' AND call_id IS NULL AND amount_micros > 0)"
            " OR (kind = 'adjustment' AND call_id IS NULL)",
            name=op.f("ck_ledger_kind_amount"),
        ),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name=op.f("fk_ledger_call_id_calls")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_ledger_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger")),
        sa.UniqueConstraint("call_id", "kind", name=op.f("uq_ledger_call_id_kind")),
    )
    op.create_index(op.f("ix_ledger_tenant_id"), "ledger", ["tenant_id"])

    op.create_table(
        "numbers",
        sa.Column("number", sa.String(length=16), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_numbers_agent_id_agents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_numbers_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_numbers")),
    )
    op.create_index(op.f("ix_numbers_tenant_id"), "numbers", ["tenant_id"])


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_index(op.f("ix_numbers_tenant_id"), table_name="numbers")

    op.drop_table("numbers")
    op.drop_index(op.f("ix_ledger_tenant_id"), table_name="ledger")

    op.drop_table("ledger")
    op.drop_index(op.f("ix_call_transcripts_call_id"), table_name="call_transcripts")

    op.drop_table("call_transcripts")
    op.drop_index(op.f("ix_api_keys_tenant_id"), table_name="api_keys")

    op.drop_table("api_keys")
    op.drop_index(
        op.f("ix_carrier_credentials_carrier_account_id"), table_name="carrier_credentials"
    )

    op.drop_table("carrier_credentials")
    op.drop_index(op.f("ix_calls_tenant_id_answered_at_ms"), table_name="calls")
    op.drop_index(op.f("ix_calls_status_checkpoint_at_ms"), table_name="calls")

    op.drop_table("calls")
    op.drop_index(op.f("ix_agents_tenant_id"), table_name="agents")

    op.drop_table("agents")
    op.drop_table("tenants")
