"""Request and response shapes of the public API, defined once as msgspec structs.

The handlers decode requests into these types (validation) and encode responses from
them; :mod:`gateway.api.routes` turns the same types into the OpenAPI components with
:func:`msgspec.json.schema_components`. Field names follow the official SDKs and
docs.rymi.live (snake_case, except the camelCase the docs use: ``displayName``,
``credentialFields``, ``accountName``, ``maxCallDuration``).

Structs do not forbid unknown fields: clients send fields we do not interpret (agents
keep them, see :mod:`gateway.api.agents`), and an SDK newer than this server must not
break on them.

This module holds the shared types (pagination, ``Timestamp``, ``Usd``, ``Provider``,
errors) and the numbers, agents, keys and telephony shapes; calls and billing are in
:mod:`gateway.api.call_schemas`, webhooks in :mod:`gateway.api.webhook_schemas`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

Limit = Annotated[int, Meta(ge=1, le=200, description="Page size (default 50, at most 200).")]
Offset = Annotated[int, Meta(ge=0, le=1_000_000, description="Items to skip.")]
Timestamp = Annotated[str, Meta(description="ISO 8601 UTC time, e.g. 2026-11-21T06:26:09.123Z")]
Usd = Annotated[float, Meta(description="US dollars.")]
Provider = Literal["twilio", "plivo", "vonage"]


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


def encode(value: Any) -> Any:
    """A struct as plain JSON-ready builtins."""
    return msgspec.to_builtins(value)


__all__ = sorted(
    [
        name
        for name, value in dict(globals()).items()
        if isinstance(value, type) and issubclass(value, Struct) and value.__module__ == __name__
    ]
    + ["Channel", "Pipeline", "Provider", "encode"]
)
