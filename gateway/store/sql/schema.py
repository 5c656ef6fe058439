"""The SQL schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

This module is the *description* the code queries against; the database itself is only
ever built by the Alembic migrations in ``gateway/store/migrations/versions`` (a test
checks that the two agree). Conventions, chosen so both backends behave the same:

* ids are text (UUID4 for our objects, the carrier's or call engine's id for calls);
* times are integer milliseconds since the Unix epoch (UTC), suffix ``_ms``: exact,
  comparable and free of SQLite's timezone-less ``DATETIME``;
* money is integer micro-dollars, suffix ``_micros`` (1 USD = 1 000 000);
* secrets are AES-GCM ciphertexts (``*_ciphertext``) next to the id of the master key
  that sealed them (``*_key_id``), see :mod:`gateway.store.secrets`.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "CALL_STATUSES",
    "FINAL_STATUSES",
    "agents",
    "api_keys",
    "billing_alerts",
    "call_transcripts",
    "calls",
    "carrier_credentials",
    "ledger",
    "metadata",
    "numbers",
    "tenants",
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_endpoints",
    "webhook_events",
]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

CARRIERS = ("twilio", "plivo", "vonage")
ROLES = ("operator", "specialist", "executive", "concierge")
FINAL_STATUSES = ("completed", "failed", "no_answer", "busy", "canceled")
CALL_STATUSES = ("queued", "live", *FINAL_STATUSES)  # queued: 0004, outbound dialing

# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
_AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("max_concurrent_calls", sa.Integer, nullable=True),  # NULL = no cap
    sa.Column("active_carrier", sa.String(16), nullable=True),
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint("max_concurrent_calls >= 0", name="max_concurrent_calls"),
    sa.CheckConstraint(_in("active_carrier", CARRIERS), name="active_carrier"),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("published", sa.Boolean, nullable=False),
    sa.Column("max_call_duration_s", sa.Integer, nullable=False),
    sa.Column("pipeline", sa.String(2048), nullable=False),
    sa.Column("secret_key_id", sa.String(16), nullable=True),
    sa.Column("secret_ciphertext", sa.LargeBinary, nullable=True),
    sa.Column("barge_in", sa.String(16), nullable=False),
    sa.Column("extra", sa.Text, nullable=False),  # JSON object of fields we do not interpret
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint(_in("role", ROLES), name="role"),
    sa.CheckConstraint("max_call_duration_s BETWEEN 30 AND 7200", name="max_call_duration_s"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # SHA-256, hex
    sa.Column("key_prefix", sa.String(32), nullable=False),
    sa.Column("label", sa.String(100), nullable=True),
    sa.Column("agent_id", sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=True),
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    sa.Column("revoked_at_ms", sa.BigInteger, nullable=True),
    sa.Column("last_used_at_ms", sa.BigInteger, nullable=True),  # 0002; coarse (about 1 min)
    # 0004: publishable keys' scoping (docs.rymi.live/api/keys.html); NULL on secret keys.
    sa.Column("allowed_channels", sa.String(32), nullable=True),  # comma-separated
    sa.Column("audience", sa.String(16), nullable=True),
    sa.Column("default_from_number", sa.String(16), nullable=True),
    sa.CheckConstraint(_in("kind", ("secret", "publishable")), name="kind"),
)

carrier_credentials = sa.Table(
    "carrier_credentials",
    metadata,
    sa.Column("tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("carrier", sa.String(16), primary_key=True),
    # Public half: Twilio account SID, Plivo auth id, Vonage api key (selects the tenant
    # from a webhook's claims). The secret half is sealed below.
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("secret_key_id", sa.String(16), nullable=False),
    sa.Column("secret_ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    # 0002: what the carrier's REST API said about the account when it was connected.
    sa.Column("account_name", sa.String(200), nullable=True),
    sa.Column("account_country", sa.String(8), nullable=True),
    sa.CheckConstraint(_in("carrier", CARRIERS), name="carrier"),
    sa.Index(None, "carrier", "account_id"),
)

numbers = sa.Table(
    "numbers",
    metadata,
    sa.Column("number", sa.String(16), primary_key=True),  # E.164: unique across tenants
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("agent_id", sa.ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
)

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("carrier_call_id", sa.String(128), nullable=True),
    sa.Column("tenant_id", sa.ForeignKey("tenants.id"), nullable=False),
    # No foreign keys to agents/numbers: a CDR outlives the agent or number it used.
    sa.Column("agent_id", sa.String(36), nullable=True),
    sa.Column("number", sa.String(16), nullable=False),
    sa.Column("carrier", sa.String(16), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # rate applied, frozen at answer
    sa.Column("max_call_duration_s", sa.Integer, nullable=False),  # cap, frozen at answer
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("answered_at_ms", sa.BigInteger, nullable=False),
    sa.Column("media_started_at_ms", sa.BigInteger, nullable=True),
    sa.Column("checkpoint_at_ms", sa.BigInteger, nullable=True),
    sa.Column("ended_at_ms", sa.BigInteger, nullable=True),
    sa.Column("end_reason", sa.String(64), nullable=True),
    sa.Column("audio_ms", sa.BigInteger, nullable=False),
    sa.Column("billable_units", sa.Integer, nullable=True),
    sa.Column("cost_micros", sa.BigInteger, nullable=True),
    sa.Column("remote_number", sa.String(16), nullable=True),  # 0004: the callee, outbound
    sa.CheckConstraint(_in("status", CALL_STATUSES), name="status"),
    sa.CheckConstraint(_in("direction", ("inbound", "outbound")), name="direction"),
    sa.CheckConstraint(_in("role", ROLES), name="role"),
    sa.CheckConstraint("audio_ms >= 0", name="audio_ms"),
    sa.UniqueConstraint("carrier", "carrier_call_id"),
    sa.Index(None, "tenant_id", "answered_at_ms"),
    sa.Index(None, "status", "checkpoint_at_ms"),
)

call_transcripts = sa.Table(
    "call_transcripts",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("speaker", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint(_in("speaker", ("caller", "agent")), name="speaker"),
)

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("amount_micros", sa.BigInteger, nullable=False),
    sa.Column("call_id", sa.ForeignKey("calls.id"), nullable=True),
    sa.Column("memo", sa.String(200), nullable=True),
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    # One debit per call, whatever races happen above (NULLs are distinct: top-ups repeat).
    sa.UniqueConstraint("call_id", "kind"),
    sa.CheckConstraint(
        "(kind = 'call' AND call_id IS NOT NULL AND amount_micros <= 0)"
        " OR (kind = 'topup' AND call_id IS NULL AND amount_micros > 0)"
        " OR (kind = 'adjustment' AND call_id IS NULL)",
        name="kind_amount",
    ),
)

billing_alerts = sa.Table(  # 0002: spend-alert settings (PUT /v1/billing/alerts)
    "billing_alerts",
    metadata,
    sa.Column("tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    # JSON array of thresholds in micro-dollars, ascending, unique.
    sa.Column("thresholds_micros", sa.Text, nullable=False),
    sa.Column("low_balance_pct", sa.Integer, nullable=True),
    sa.Column("email_enabled", sa.Boolean, nullable=False),
    sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint("low_balance_pct BETWEEN 1 AND 100", name="low_balance_pct"),
)


# -- webhooks (0003; gateway/webhooks, docs/webhooks.md) ---------------------------------

DELIVERY_STATUSES = ("pending", "delivered", "dead")

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("events", sa.Text, nullable=False),  # JSON array of event type names
    sa.Column("alert_email", sa.String(254), nullable=True),
    sa.Column("secret_key_id", sa.String(16), nullable=False),
    sa.Column("secret_ciphertext", sa.LargeBinary, nullable=False),
    # The secret replaced by the last rotation: it still signs until it expires.
    sa.Column("previous_secret_key_id", sa.String(16), nullable=True),
    sa.Column("previous_secret_ciphertext", sa.LargeBinary, nullable=True),
    sa.Column("previous_secret_expires_at_ms", sa.BigInteger, nullable=True),
    # Alert throttle: a conditional UPDATE on this column lets one alert per window through.
    sa.Column("last_alert_at_ms", sa.BigInteger, nullable=True),
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # the event id inside the signed body
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # the exact bytes every attempt signs
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column(
        "event_id",
        sa.ForeignKey("webhook_events.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column(
        "endpoint_id",
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),  # claims so far (a claim = an attempt)
    sa.Column("next_attempt_at_ms", sa.BigInteger, nullable=False),
    sa.Column("claimed_until_ms", sa.BigInteger, nullable=True),  # lease of one dispatcher
    sa.Column("claim_token", sa.String(32), nullable=True),
    sa.Column("replay_of", sa.String(40), nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.String(200), nullable=True),
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    sa.Column("finished_at_ms", sa.BigInteger, nullable=True),  # delivered or dead-lettered
    sa.CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
    sa.Index(None, "status", "next_attempt_at_ms"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("started_at_ms", sa.BigInteger, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error", sa.String(200), nullable=True),
)
