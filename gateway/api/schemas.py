"""Request and response shapes of the public API, defined once as msgspec structs.

The handlers decode requests into these types (validation) and encode responses from
them; :mod:`gateway.api.openapi` turns the same types into the OpenAPI components with
:func:`msgspec.json.schema_components`. Field names follow the official SDKs and
docs.rymi.live (snake_case, except the camelCase the docs use: ``displayName``,
``credentialFields``, ``accountName``, ``maxCallDuration``).

Structs do not forbid unknown fields: clients send fields we do not interpret (agents
keep them, see :mod:`gateway.api.agents`), and an SDK newer than this server must not
break on them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

Limit = Annotated[int, Meta(ge=1, le=200, description="Page size (default 50, at most 200).")]
Offset = Annotated[int, Meta(ge=0, le=1_000_000, description="Items to skip.")]
Timestamp = Annotated[str, Meta(description="ISO 8601 UTC time, e.g. 2026-11-21T06:26:09.123Z")]
Usd = Annotated[float, Meta(description="US dollars.")]
Provider = Literal["twilio", "plivo", "vonage"]
CallStatusName = Literal[
    "queued", "ringing", "in_progress", "completed", "failed", "no_answer", "busy", "canceled"
]


class ErrorBody(Struct, omit_defaults=True):
    """Every error response: a short title, a stable snake_case code, maybe a detail."""

    error: str
    code: str
    message: str | None = None


# -- pagination ------------------------------------------------------------------------


class PageQuery(Struct, forbid_unknown_fields=False):
    """``limit`` / ``offset`` query parameters."""

    limit: Limit = 50
    offset: Offset = 0


class CallsQuery(Struct):
    """Query parameters of the call lists."""

    limit: Limit = 50
    offset: Offset = 0
    cursor: Annotated[str, Meta(max_length=200)] | None = None
    status: CallStatusName | None = None


# -- numbers ---------------------------------------------------------------------------


class RegisterNumber(Struct):
    """``POST /v1/numbers``."""

    number: Annotated[str, Meta(description="E.164, e.g. +14155550100", max_length=32)]
    agent_id: Annotated[str, Meta(max_length=64)] | None = None


class AttachNumber(Struct):
    """``POST /v1/numbers/{number}/attach``."""

    agent_id: Annotated[str, Meta(max_length=64)]


class NumberOut(Struct):
    """A registered number. ``phone_number`` and ``assigned_agent_id`` repeat ``number``
    and ``agent_id`` under the names other SDK versions read."""

    id: str
    number: str
    phone_number: str
    provider: Provider | None
    agent_id: str | None
    assigned_agent_id: str | None
    created_at: Timestamp


class NumberList(Struct):
    numbers: list[NumberOut]
    total: int
    offset: int
    limit: int


class NumberAssignment(Struct):
    """A number registered or attached, and its agent."""

    status: Literal["registered", "attached"]
    number: str
    agent_id: str | None


class NumberStatus(Struct):
    """A number detached or removed."""

    status: Literal["detached", "removed"]
    number: str


# -- agents ----------------------------------------------------------------------------


class BuiltinPipeline(Struct, tag="builtin", tag_field="type"):
    """An in-process agent of the gateway (``echo``)."""

    name: Literal["echo"] = "echo"


class WebSocketPipeline(Struct, tag="websocket", tag_field="type"):
    """An agent speaking the gateway's agent protocol (docs/agent-protocol.md)."""

    url: Annotated[str, Meta(max_length=2048, description="ws:// or wss:// URL")]
    secret: Annotated[str, Meta(min_length=32, max_length=256)] | None = None
    """Shared secret; required when the pipeline is set or changed; never returned."""


Pipeline = BuiltinPipeline | WebSocketPipeline


class AgentAdvanced(Struct, forbid_unknown_fields=False):
    """Runtime controls. Only ``maxCallDuration`` is interpreted by the gateway; other
    keys (``postSilenceHangup``, ...) are stored and returned as given."""

    maxCallDuration: Annotated[int, Meta(description="Seconds, 30-7200 (default 600).")] | None = (
        None
    )


class AgentWrite(Struct):
    """``POST /v1/agents`` and ``PUT``/``PATCH /v1/agents/{id}``; any other field is kept."""

    name: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    agent_role: Literal["operator", "specialist", "executive", "concierge"] | None = None
    advanced: AgentAdvanced | None = None
    pipeline: Pipeline | None = None
    barge_in: Literal["on", "off"] | None = None


class PipelineOut(Struct):
    type: Literal["builtin", "websocket"]
    name: str | None
    url: str | None
    has_secret: bool


class AgentOut(Struct):
    """An agent; fields the gateway does not interpret come back beside these."""

    id: str
    name: str
    agent_role: str
    published: bool
    advanced: dict[str, Any]
    pipeline: PipelineOut
    barge_in: str
    created_at: Timestamp
    updated_at: Timestamp


class AgentList(Struct):
    agents: list[AgentOut]
    total: int
    offset: int
    limit: int


class AgentDeleted(Struct):
    status: Literal["deleted"]
    id: str


class AgentPublished(Struct):
    published: bool
    id: str
    blockers: list[str] = field(default_factory=list)


# -- keys ------------------------------------------------------------------------------


class CreateKey(Struct):
    """``POST /v1/auth/api-keys`` (the SDK sends ``kind`` and ``scopes``)."""

    label: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    kind: Literal["account", "workspace"] = "account"
    scopes: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=32)] = field(
        default_factory=list
    )


class CreatedKey(Struct):
    """The new key; ``key`` is shown here once and never again."""

    id: str
    key: str
    key_prefix: str
    label: str | None
    kind: str
    scopes: list[str]
    created_at: Timestamp


class KeyOut(Struct):
    id: str
    key_prefix: str
    label: str | None
    last_used_at: Timestamp | None
    created_at: Timestamp


class KeyList(Struct):
    keys: list[KeyOut]


class Me(Struct):
    """``GET /v1/auth/me``: the account behind the key (docs.rymi.live/api/auth.html)."""

    id: str
    api_key_prefix: str
    telephony_provider: Provider | None
    plivo_connected: bool
    plivo_account_name: str | None
    plivo_account_country: str | None


class KeyRevoked(Struct):
    status: Literal["revoked"]
    id: str


Channel = Literal["web", "phone"]


class CreatePublishableKey(Struct):
    """``POST /v1/keys/publishable`` (docs.rymi.live/api/keys.html)."""

    agent_id: Annotated[str, Meta(max_length=64)]
    label: Annotated[str, Meta(min_length=1, max_length=100)]
    allowed_channels: Annotated[list[Channel], Meta(min_length=1, max_length=2)] | None = None
    """Default ``["web"]``."""
    audience: Literal["sdk", "landing_demo"] | None = None
    """Default ``sdk``."""
    default_from_number: Annotated[str, Meta(max_length=32)] | None = None
    """E.164; one of the account's registered numbers."""


class CreatedPublishableKey(Struct):
    """The new publishable key; ``key`` is shown here once and never again."""

    id: str
    key: str
    key_prefix: str
    agent_id: str
    label: str | None
    allowed_channels: list[str]
    audience: str
    default_from_number: str | None
    created_at: Timestamp


class PublishableKeyOut(Struct):
    id: str
    key_prefix: str
    agent_id: str
    label: str | None
    allowed_channels: list[str]
    audience: str
    default_from_number: str | None
    last_used_at: Timestamp | None
    created_at: Timestamp


class PublishableKeyList(Struct):
    keys: list[PublishableKeyOut]


class Success(Struct):
    success: bool


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


# -- telephony -------------------------------------------------------------------------


class CredentialField(Struct, omit_defaults=True):
    name: str
    label: str
    required: bool
    secret: bool = False


class ProviderInfo(Struct):
    id: Provider
    displayName: str
    credentialFields: list[CredentialField]


class Providers(Struct):
    providers: list[ProviderInfo]


Credential = Annotated[str, Meta(min_length=1, max_length=256)]


class CarrierCredentialsIn(Struct):
    """``POST /v1/telephony/validate`` and ``/connect``."""

    provider: Annotated[str, Meta(max_length=32)]
    auth_id: Credential | None = None
    auth_token: Credential | None = None
    api_key: Credential | None = None
    api_secret: Credential | None = None
    signature_secret: Credential | None = None


class Validation(Struct, omit_defaults=True):
    valid: bool
    accountName: str | None = None
    error: str | None = None


class Connected(Struct):
    status: Literal["connected"]
    provider: Provider
    account_name: str | None
    message: str


class TelephonyStatus(Struct):
    connected: bool
    provider: Provider | None
    account_name: str | None
    account_country: str | None


class CarrierNumberOut(Struct):
    id: str
    provider: Provider
    phone_number: str
    number_status: str
    backend_agent_id: str | None


class CarrierNumbers(Struct):
    numbers: list[CarrierNumberOut]


class Disconnected(Struct):
    status: Literal["disconnected"]
    message: str


# -- calls -----------------------------------------------------------------------------


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


def encode(value: Any) -> Any:
    """A struct as plain JSON-ready builtins."""
    return msgspec.to_builtins(value)


__all__ = sorted(
    [
        name
        for name, value in dict(globals()).items()
        if isinstance(value, type) and issubclass(value, Struct) and value.__module__ == __name__
    ]
    + ["CallStatusName", "Channel", "Pipeline", "Provider", "encode"]
)
