"""Request and response shapes of calls (``/v1/calls``) and billing (``/v1/billing``).

Kept beside :mod:`gateway.api.schemas` (same conventions: msgspec structs, the OpenAPI
components are generated from them) so that module stays a readable size; the shared
types (:data:`~gateway.api.schemas.Timestamp`, ``Usd``, ``Provider``, ...) live there.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from gateway.api.schemas import Limit, Offset, Provider, Timestamp, Usd

__all__ = [
    "AgentRef",
    "AgentRoles",
    "AlertsIn",
    "AlertsOut",
    "Balance",
    "CallBilling",
    "CallCreated",
    "CallEnded",
    "CallList",
    "CallOut",
    "CallStatusName",
    "CallsQuery",
    "CreateCall",
    "Ok",
    "ParticipantIn",
    "ParticipantOut",
    "RoleRate",
    "TopUpIn",
    "TopUpOut",
    "Transcript",
    "TranscriptLineOut",
    "UsagePeriod",
    "UsageSummary",
    "VoiceRuntime",
]

CallStatusName = Literal[
    "queued", "ringing", "in_progress", "completed", "failed", "no_answer", "busy", "canceled"
]


# -- calls -----------------------------------------------------------------------------


class CallsQuery(Struct):
    """Query parameters of the call lists."""

    limit: Limit = 50
    offset: Offset = 0
    cursor: Annotated[str, Meta(max_length=200)] | None = None
    status: CallStatusName | None = None


class CallBilling(Struct):
    role: str
    rate_per_minute: Usd
    billable_units: int | None
    billable_seconds: int | None
    cost_usd: Usd | None


class TranscriptLineOut(Struct):
    speaker: Literal["caller", "agent"]
    type: Literal["user_input", "ai_response"]
    text: str
    timestamp: Timestamp


class CallOut(Struct, omit_defaults=True):
    id: str
    agent_id: str | None
    status: str
    direction: str
    provider: str
    number: str
    started_at: Timestamp
    ended_at: Timestamp | None
    end_reason: str | None
    duration_seconds: float
    bill_duration: int | None
    total_cost: Usd | None
    billing: CallBilling
    transcript: list[TranscriptLineOut] | None = None
    remote_number: str | None = None
    """The other party of an outbound call (E.164)."""


class CallList(Struct):
    calls: list[CallOut]
    total: int
    limit: int
    offset: int
    next_cursor: str | None


class Transcript(Struct):
    call_id: str
    transcript: list[TranscriptLineOut]


class CallEnded(Struct):
    """A hang-up sent to a live call (``ending``), or a queued call stopped (``canceled``)."""

    status: Literal["ending", "canceled"]
    id: str
    message: str


class ParticipantIn(Struct):
    """A call participant. This gateway dials PSTN participants only."""

    transport: Annotated[str, Meta(max_length=16, description="pstn")]
    identity: Annotated[str, Meta(max_length=32, description="E.164 number to dial")]
    from_number: Annotated[str, Meta(max_length=32)] | None = None
    """Caller ID: one of the account's numbers (default: a number attached to the agent)."""
    metadata: dict[str, Any] | None = None


class CreateCall(Struct):
    """``POST /v1/calls`` (docs.rymi.live/api/calls.html); exactly one PSTN participant.

    ``metadata``, ``variables`` and ``post_call`` are accepted and not used by the gateway.
    """

    agent_id: Annotated[str, Meta(max_length=64)]
    participants: Annotated[list[ParticipantIn], Meta(max_length=10)]
    metadata: dict[str, Any] | None = None
    variables: dict[str, Any] | None = None
    post_call: dict[str, Any] | None = None


class ParticipantOut(Struct):
    id: str
    transport: Literal["pstn"]
    identity: str
    status: Literal["joining"]
    telephony_leg_id: str


class AgentRef(Struct):
    id: str
    name: str


class CallCreated(Struct):
    """A queued outbound call (202): the carrier is dialing the participant."""

    id: str
    room_name: str
    status: Literal["queued"]
    direction: Literal["outbound"]
    provider: Provider
    from_number: str
    participants: list[ParticipantOut]
    agent: AgentRef


# -- billing ---------------------------------------------------------------------------


class RoleRate(Struct):
    rate_per_minute: Usd
    rate_per_second: Usd
    display_name: str


class AgentRoles(Struct):
    roles: dict[str, RoleRate]


class Balance(Struct):
    tenant_id: str
    balance_usd: Usd
    balance_seconds: Annotated[int, Meta(description="Seconds left at the operator rate.")]
    estimated_minutes_remaining: float
    roles: dict[str, Usd]
    is_active: bool


class VoiceRuntime(Struct):
    remaining_minutes: float
    status: Literal["active", "depleted"]


class UsagePeriod(Struct):
    start: Timestamp
    calls: int
    billable_minutes: float
    spend_usd: Usd


class UsageSummary(Struct):
    voice_runtime: VoiceRuntime
    current_month: UsagePeriod


class AlertsIn(Struct):
    """``PUT /v1/billing/alerts``; absent fields keep their current value."""

    thresholds_usd: Annotated[list[Decimal], Meta(max_length=20)] | None = None
    """Dollar amounts above 0 and at most 1 000 000, at most 6 decimals."""
    low_balance_pct: Annotated[int, Meta(ge=1, le=100)] | None = None
    email_enabled: bool | None = None


class AlertsOut(Struct):
    thresholds_usd: list[Usd]
    low_balance_pct: int | None
    email_enabled: bool


class Ok(Struct):
    ok: bool


class TopUpIn(Struct):
    """Admin top-up: a positive dollar amount (string or number, at most 6 decimals)."""

    amount_usd: Decimal
    memo: Annotated[str, Meta(max_length=200)] | None = None


class TopUpOut(Struct):
    tenant_id: str
    amount_usd: Usd
    balance_usd: Usd
