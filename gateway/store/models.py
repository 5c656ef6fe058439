"""What the directory and the ledger return: frozen dataclasses, secrets wrapped.

Times are integer milliseconds since the Unix epoch; money is integer micro-dollars.
Nothing here does I/O; the validation helpers raise
:class:`~gateway.errors.ValidationError` naming the field and the allowed shape or range.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from gateway.errors import ValidationError
from gateway.metering import Role
from gateway.store.secrets import Secret

__all__ = [
    "BUILTIN_PIPELINES",
    "MAX_CALL_DURATION_RANGE_S",
    "Agent",
    "ApiKey",
    "BargeIn",
    "BillingAlerts",
    "CallEnd",
    "CallRecord",
    "CallStart",
    "CallStatus",
    "CarrierAccount",
    "CarrierCredentials",
    "CreatedApiKey",
    "Direction",
    "KeyKind",
    "Number",
    "NumberRoute",
    "PlivoCredentials",
    "Tenant",
    "TranscriptLine",
    "TwilioCredentials",
    "VonageCredentials",
    "validate_e164",
]

BUILTIN_PIPELINES = frozenset({"echo"})
"""Built-in in-process agents an agent's pipeline may name instead of a URL."""

MAX_CALL_DURATION_RANGE_S = (30, 7200)
"""Allowed max call duration, in seconds (inclusive)."""

DEFAULT_MAX_CALL_DURATION_S = 600
"""Max call duration when none is given, in seconds."""

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # ITU-T E.164: at most 15 digits, no leading 0


def validate_e164(number: object, field_name: str = "number") -> str:
    """Return ``number`` if it is E.164 (``+`` then 2-15 digits), else raise.

    Raises:
        ValidationError: not E.164.
    """
    if not isinstance(number, str) or not _E164.fullmatch(number):
        raise ValidationError(
            field_name, f"expected E.164 like +14155550100 (+ and 2-15 digits), got {number!r}"
        )
    return number


class KeyKind(enum.StrEnum):
    """API key kinds (docs.rymi.live/api/keys.html)."""

    SECRET = "secret"  # noqa: S105 - a kind, not a password. rymi_..., full management access, backend only
    PUBLISHABLE = "publishable"  # sb_publishable_..., frontend-safe, bound to one agent


class BargeIn(enum.StrEnum):
    """The agent's barge-in setting (docs/agent-protocol.md, ``barge_in``)."""

    ON = "on"  # caller speech clears the agent's queued audio at once (gateway VAD)
    OFF = "off"  # the gateway only reports ``speech_started``; the agent may send ``clear``


class Direction(enum.StrEnum):
    """Call direction as seen from the tenant's number."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallStatus(enum.StrEnum):
    """A call's status; every status but ``queued`` and ``live`` is final.

    ``queued`` is an outbound call asked of the carrier and not answered yet
    (``POST /v1/calls``); it becomes ``live`` when the callee answers.
    """

    QUEUED = "queued"
    LIVE = "live"
    COMPLETED = "completed"
    FAILED = "failed"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class Tenant:
    """A customer account. Its balance lives in the ledger (sum of transactions)."""

    id: str
    name: str
    max_concurrent_calls: int | None
    """Concurrent call cap; None means no cap."""
    active_carrier: str | None
    """The one carrier whose credentials are in use, or None when none is connected."""
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: only its SHA-256 hash and a short display prefix."""

    id: str
    tenant_id: str
    kind: KeyKind
    key_prefix: str
    label: str | None
    agent_id: str | None
    """The agent a publishable key is bound to; None for secret keys."""
    created_at_ms: int
    revoked_at_ms: int | None
    last_used_at_ms: int | None = None
    """When the key last authenticated a request (coarse: updated about once a minute)."""
    allowed_channels: tuple[str, ...] = ()
    """Publishable keys: the channels it may start calls on (``web``, ``phone``)."""
    audience: str | None = None
    """Publishable keys: ``sdk`` or ``landing_demo``."""
    default_from_number: str | None = None
    """Publishable keys: the caller ID of phone calls it starts (E.164), if any."""


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A new key: the record and the plaintext, which is shown once and never stored."""

    key: ApiKey
    plaintext: Secret


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent: its role (rate), limits and pipeline. The pipeline secret stays sealed."""

    id: str
    tenant_id: str
    name: str
    role: Role
    published: bool
    max_call_duration_s: int
    pipeline: str
    """A built-in agent name (``echo``) or the agent's ``ws://``/``wss://`` URL."""
    barge_in: BargeIn
    has_pipeline_secret: bool
    extra: dict[str, Any] = field(hash=False)
    """Agent fields the gateway does not interpret (voice, llm, ...), returned as given."""
    created_at_ms: int
    updated_at_ms: int

    @property
    def builtin(self) -> bool:
        """Whether the pipeline is a built-in in-process agent."""
        return self.pipeline in BUILTIN_PIPELINES


@dataclass(frozen=True, slots=True)
class Number:
    """A phone number registered to a tenant."""

    number: str
    tenant_id: str
    agent_id: str | None
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class NumberRoute:
    """Answer-time lookup result: the number, its tenant and its agent (if attached)."""

    number: str
    tenant: Tenant
    agent: Agent | None


@dataclass(frozen=True, slots=True)
class CarrierAccount:
    """The tenant's connected carrier account, without its secrets."""

    carrier: str
    account_id: str
    """The public half: Twilio account SID, Plivo auth id or Vonage api key."""
    account_name: str | None
    """The account's name as the carrier's REST API reported it at connect time."""
    account_country: str | None
    """ISO country code the carrier reported, when it reports one."""
    connected_at_ms: int


@dataclass(frozen=True, slots=True)
class BillingAlerts:
    """A tenant's spend-alert settings (``PUT /v1/billing/alerts``).

    Emitting the alert events is the webhooks' job; the ledger only stores these.
    """

    thresholds_micros: tuple[int, ...]
    """Balance thresholds, ascending, in micro-dollars."""
    low_balance_pct: int | None
    """Warn when the balance falls below this percentage of the last top-up (1-100)."""
    email_enabled: bool
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class CarrierCredentials:
    """Base of the per-carrier credentials; the secret half is :class:`Secret`."""

    carrier: ClassVar[str]
    account_id: str
    """The public half: Twilio account SID, Plivo auth id or Vonage api key."""

    def secret_fields(self) -> dict[str, str]:
        """The secret fields in plaintext, for sealing."""
        raise NotImplementedError

    @classmethod
    def from_fields(cls, account_id: str, secrets: dict[str, Secret]) -> CarrierCredentials:
        """Rebuild from the public half and the opened secret fields."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class TwilioCredentials(CarrierCredentials):
    """Twilio: account SID (``AC`` + 32 hex) and auth token (signs webhooks, HMAC-SHA1)."""

    carrier: ClassVar[str] = "twilio"
    auth_token: Secret

    def secret_fields(self) -> dict[str, str]:
        return {"auth_token": self.auth_token.reveal()}

    @classmethod
    def from_fields(cls, account_id: str, secrets: dict[str, Secret]) -> TwilioCredentials:
        return cls(account_id, secrets["auth_token"])


@dataclass(frozen=True, slots=True)
class PlivoCredentials(CarrierCredentials):
    """Plivo: auth id and auth token (signs V3 webhooks, HMAC-SHA256)."""

    carrier: ClassVar[str] = "plivo"
    auth_token: Secret

    def secret_fields(self) -> dict[str, str]:
        return {"auth_token": self.auth_token.reveal()}

    @classmethod
    def from_fields(cls, account_id: str, secrets: dict[str, Secret]) -> PlivoCredentials:
        return cls(account_id, secrets["auth_token"])


@dataclass(frozen=True, slots=True)
class VonageCredentials(CarrierCredentials):
    """Vonage: api key, api secret and the signature secret (signs webhook JWTs)."""

    carrier: ClassVar[str] = "vonage"
    api_secret: Secret
    signature_secret: Secret | None = None

    def secret_fields(self) -> dict[str, str]:
        fields = {"api_secret": self.api_secret.reveal()}
        if self.signature_secret is not None:
            fields["signature_secret"] = self.signature_secret.reveal()
        return fields

    @classmethod
    def from_fields(cls, account_id: str, secrets: dict[str, Secret]) -> VonageCredentials:
        return cls(account_id, secrets["api_secret"], secrets.get("signature_secret"))


@dataclass(frozen=True, slots=True)
class CallStart:
    """What the call engine knows when it answers a call."""

    call_id: str
    """Our call id (also the lease member in coordination)."""
    tenant_id: str
    agent_id: str
    number: str
    carrier: str
    role: Role
    max_call_duration_s: int
    answered_at_ms: int
    direction: Direction = Direction.INBOUND
    carrier_call_id: str | None = None
    """The carrier's id (Twilio CallSid, Plivo CallUUID, Vonage uuid)."""
    remote_number: str | None = None
    """The other party (E.164): the callee of an outbound call."""


@dataclass(frozen=True, slots=True)
class CallEnd:
    """What the call engine knows when a call ends (the input to finalization)."""

    call_id: str
    status: CallStatus
    end_reason: str
    ended_at_ms: int
    audio_ms: int
    """Billable audio measured by the call's meter, in milliseconds."""


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One transcript line sent by the agent."""

    speaker: str
    """``caller`` or ``agent``."""
    text: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call detail record (CDR); final once ``status`` is not ``live``."""

    id: str
    carrier_call_id: str | None
    tenant_id: str
    agent_id: str | None
    number: str
    carrier: str
    direction: Direction
    role: Role
    max_call_duration_s: int
    status: CallStatus
    answered_at_ms: int
    media_started_at_ms: int | None
    checkpoint_at_ms: int | None
    ended_at_ms: int | None
    end_reason: str | None
    audio_ms: int
    billable_units: int | None
    cost_micros: int | None
    remote_number: str | None = None
    """The other party (E.164): the callee of an outbound call (0004)."""

    @property
    def final(self) -> bool:
        """Whether the call has its final record."""
        return self.status not in (CallStatus.QUEUED, CallStatus.LIVE)

    @property
    def audio_seconds(self) -> Decimal:
        """Audio in seconds, exact (milliseconds resolution)."""
        return Decimal(self.audio_ms).scaleb(-3)
