"""The agent protocol ``rymi-agent/1``, sans I/O: messages, encoding, strict decoding.

The gateway connects *out* to an agent's WebSocket URL (RFC 6455), authenticating with a
short-lived HS256 JWT (RFC 7519, RFC 7518 §3.2) signed with the agent's shared secret,
sent as ``Authorization: Bearer <token>`` (RFC 6750 §2.1). Text frames carry JSON control
messages, one object per frame, tagged by ``"type"``; binary frames carry PCM16
little-endian mono audio at the rates announced in ``start``. docs/agent-protocol.md is
the normative description; its examples are parsed by the tests.

Forward compatibility: unknown fields are ignored, and a message of an unknown type is
returned as :class:`UnknownMessage` (to be counted and skipped) unless it carries
``"required": true``, in which case it is refused (:data:`ProtocolViolation.UNSUPPORTED`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final, Literal, TypeVar

import jwt
import msgspec

from gateway.errors import AgentError, ConfigError

__all__ = [
    "MAX_AUDIO_BYTES",
    "MAX_TEXT_BYTES",
    "PROTOCOL",
    "AgentAuthClaims",
    "AgentMessage",
    "AudioSpec",
    "BargeIn",
    "Clear",
    "Dtmf",
    "DurationWarning",
    "Error",
    "GatewayMessage",
    "Hangup",
    "Mark",
    "MarkCleared",
    "MarkPlayed",
    "ProtocolViolation",
    "SpeechEnded",
    "SpeechStarted",
    "Start",
    "Stop",
    "Transcript",
    "UnknownMessage",
    "check_audio_frame",
    "decode_agent_message",
    "decode_gateway_message",
    "encode_message",
    "issue_agent_token",
    "verify_agent_token",
]

PROTOCOL: Final = "rymi-agent/1"
"""Protocol name and major version, sent in ``start``."""
MAX_TEXT_BYTES: Final = 16 * 1024
"""Largest JSON control message accepted, in bytes."""
MAX_AUDIO_BYTES: Final = 64 * 1024
"""Largest binary audio frame accepted (1.3 s at 24 kHz), the media socket cap of
reliability.md §5.3."""
TOKEN_ISSUER: Final = "rymi-gateway"  # noqa: S105 (a JWT "iss" value, not a secret)
DEFAULT_TOKEN_TTL_S: Final = 60
_MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key must be at least 256 bits


class ProtocolViolation(StrEnum):
    """Why a peer's message was refused (the ``reason`` of the :class:`AgentError`)."""

    MALFORMED = "malformed"
    """Not JSON, not an object with a string ``type``, or a known type with bad fields."""
    TOO_LARGE = "too_large"
    """Over :data:`MAX_TEXT_BYTES` (text) or :data:`MAX_AUDIO_BYTES` (binary)."""
    UNSUPPORTED = "unsupported"
    """An unknown message type marked ``"required": true``."""
    INVALID_AUDIO = "invalid_audio"
    """An empty binary frame, or one that is not whole 16-bit samples."""
    UNAUTHORIZED = "unauthorized"
    """A bearer token that is missing, forged, expired or for another agent."""


# -- field types -------------------------------------------------------------------------

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Party = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]  # E.164 or carrier's id
Carrier = Annotated[str, msgspec.Meta(pattern="^[a-z][a-z0-9_]{0,15}$")]
Digits = Annotated[str, msgspec.Meta(pattern="^[0-9A-D*#]{1,32}$")]  # ITU-T Q.23 keys
Ms = Annotated[int, msgspec.Meta(ge=0)]
SampleRate = Literal[16000, 24000]


class AudioSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One direction's audio format: PCM16 little-endian, mono, 16 or 24 kHz."""

    encoding: Literal["pcm16le"] = "pcm16le"
    sample_rate: SampleRate = 16000
    channels: Literal[1] = 1


class _Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base of every message: JSON object tagged by ``type``; unknown fields ignored."""


# -- gateway → agent ---------------------------------------------------------------------


class Start(_Message, tag="start", frozen=True, kw_only=True, omit_defaults=False):
    """First message on the socket: the call and the audio formats of both directions."""

    protocol: str = PROTOCOL
    call_id: Id
    tenant_id: Id
    agent_id: Id
    from_: Party = msgspec.field(name="from")
    to: Party
    carrier: Carrier
    carrier_call_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    direction: Literal["inbound", "outbound"]
    max_duration_s: Annotated[int, msgspec.Meta(ge=30, le=7200)]
    caller_audio: AudioSpec = AudioSpec()
    """What the gateway sends: the caller's voice."""
    agent_audio: AudioSpec = AudioSpec()
    """What the agent must send."""
    parameters: dict[Name, Annotated[str, msgspec.Meta(max_length=1024)]] = {}
    """Custom parameters the carrier passed with the stream (e.g. Twilio ``<Parameter>``)."""


class Stop(_Message, tag="stop", frozen=True, kw_only=True):
    """The call has ended; no more audio will flow. The gateway closes after sending it."""

    reason: Reason


class MarkPlayed(_Message, tag="mark_played", frozen=True, kw_only=True):
    """The caller heard all audio up to a mark."""

    name: Name
    heard_ms: Ms
    """Audio heard since the previous mark (or clear, or call start): the stretch this
    mark closes."""
    position_ms: Ms
    """Agent audio heard in the whole call, up to this mark."""


class MarkCleared(_Message, tag="mark_cleared", frozen=True, kw_only=True):
    """A clear discarded the audio before a mark; the caller will never reach it."""

    name: Name
    heard_ms: Ms
    """Of the stretch this mark closes, what the caller heard before the clear (0 for
    every cleared mark after the first)."""
    position_ms: Ms
    """Agent audio heard in the whole call, up to the clear."""


class DurationWarning(_Message, tag="duration_warning", frozen=True, kw_only=True):
    """The call will be ended at its maximum duration in ``seconds_left`` seconds."""

    seconds_left: Annotated[int, msgspec.Meta(ge=0)]


class SpeechStarted(_Message, tag="speech_started", frozen=True, kw_only=True):
    """The gateway's voice activity detector heard the caller start speaking."""

    at_ms: Ms
    """Position in the caller audio sent to the agent, in milliseconds."""


class SpeechEnded(_Message, tag="speech_ended", frozen=True, kw_only=True):
    """The caller stopped speaking."""

    at_ms: Ms


class BargeIn(_Message, tag="barge_in", frozen=True, kw_only=True):
    """The caller spoke over the agent and the gateway cleared the agent's audio."""

    heard_ms: Ms
    """Agent audio heard in the whole call, up to the barge-in."""
    discarded_ms: Ms
    """Agent audio received but never heard (queued here or buffered at the carrier)."""


# -- both ways ---------------------------------------------------------------------------


class Dtmf(_Message, tag="dtmf", frozen=True, kw_only=True):
    """Keypad digits: pressed by the caller, or to be played to the caller."""

    digits: Digits
    duration_ms: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None


class Error(_Message, tag="error", frozen=True, kw_only=True):
    """Something went wrong on the sender's side or with the receiver's last message."""

    code: Annotated[str, msgspec.Meta(pattern="^[a-z][a-z0-9_.]{0,63}$")]
    message: Annotated[str, msgspec.Meta(max_length=1024)] = ""


# -- agent → gateway ---------------------------------------------------------------------


class Clear(_Message, tag="clear", frozen=True, kw_only=True):
    """Barge-in by the agent: drop all of its audio not yet heard, at once."""


class Mark(_Message, tag="mark", frozen=True, kw_only=True):
    """Tell me when the caller has heard everything I sent before this."""

    name: Name


class Hangup(_Message, tag="hangup", frozen=True, kw_only=True):
    """End the call (after the audio already sent has played)."""

    reason: Reason = "agent_hangup"


class Transcript(_Message, tag="transcript", frozen=True, kw_only=True):
    """A line of the conversation, kept on the call record."""

    role: Literal["agent", "caller"]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=8000)]


AgentMessage = Clear | Mark | Hangup | Dtmf | Transcript | Error
"""Messages an agent may send."""
GatewayMessage = (
    Start
    | Stop
    | MarkPlayed
    | MarkCleared
    | DurationWarning
    | SpeechStarted
    | SpeechEnded
    | BargeIn
    | Dtmf
    | Error
)
"""Messages the gateway sends."""


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A message of a type this version does not know, to be counted and skipped."""

    type: str


class _Envelope(msgspec.Struct):
    type: Annotated[str, msgspec.Meta(max_length=64)]
    required: bool = False


_T = TypeVar("_T")
_ENCODER = msgspec.json.Encoder()
_ENVELOPE = msgspec.json.Decoder(_Envelope)
_AGENT_DECODER = msgspec.json.Decoder(AgentMessage)
_GATEWAY_DECODER = msgspec.json.Decoder(GatewayMessage)
_AGENT_TAGS = frozenset(t.__struct_config__.tag for t in AgentMessage.__args__)
_GATEWAY_TAGS = frozenset(t.__struct_config__.tag for t in GatewayMessage.__args__)


def encode_message(message: AgentMessage | GatewayMessage) -> str:
    """Encode a message as the text of one WebSocket text frame (compact JSON)."""
    return _ENCODER.encode(message).decode("utf-8")


def decode_agent_message(data: str | bytes) -> AgentMessage | UnknownMessage:
    """Decode one text frame received from an agent.

    Raises:
        AgentError: with ``reason`` from :class:`ProtocolViolation`.
    """
    message: AgentMessage | UnknownMessage = _decode(data, _AGENT_DECODER, _AGENT_TAGS)
    return message


def decode_gateway_message(data: str | bytes) -> GatewayMessage | UnknownMessage:
    """Decode one text frame received from the gateway (the agent's side; tests, SDKs).

    Raises:
        AgentError: with ``reason`` from :class:`ProtocolViolation`.
    """
    message: GatewayMessage | UnknownMessage = _decode(data, _GATEWAY_DECODER, _GATEWAY_TAGS)
    return message


def _decode(
    data: str | bytes, decoder: msgspec.json.Decoder[_T], tags: frozenset[object]
) -> _T | UnknownMessage:
    # A str has at most as many characters as UTF-8 bytes: check before encoding it.
    too_long = len(data) > MAX_TEXT_BYTES
    raw = data.encode("utf-8", errors="replace") if isinstance(data, str) and not too_long else data
    if too_long or len(raw) > MAX_TEXT_BYTES:
        raise AgentError(
            f"control message of {len(raw)} bytes exceeds {MAX_TEXT_BYTES}",
            reason=ProtocolViolation.TOO_LARGE,
        )
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        first_error = str(exc)
    try:
        envelope = _ENVELOPE.decode(raw)
    except msgspec.DecodeError:
        raise AgentError(
            "expected a JSON object with a string 'type'", reason=ProtocolViolation.MALFORMED
        ) from None
    if envelope.type in tags:
        raise AgentError(
            f"invalid {envelope.type!r} message: {first_error[:200]}",
            reason=ProtocolViolation.MALFORMED,
        )
    if envelope.required:
        raise AgentError(
            f"unsupported required message type {envelope.type!r}",
            reason=ProtocolViolation.UNSUPPORTED,
        )
    return UnknownMessage(envelope.type)


def check_audio_frame(data: bytes, max_bytes: int = MAX_AUDIO_BYTES) -> bytes:
    """Check one binary frame of PCM16 audio and return it unchanged.

    Raises:
        AgentError: empty or odd-length (``INVALID_AUDIO``), or over ``max_bytes``
            (``TOO_LARGE``). The message gives sizes only, never audio.
    """
    if len(data) > max_bytes:
        raise AgentError(
            f"audio frame of {len(data)} bytes exceeds {max_bytes}",
            reason=ProtocolViolation.TOO_LARGE,
        )
    if not data or len(data) % 2:
        raise AgentError(
            f"audio frame of {len(data)} bytes is not whole 16-bit samples",
            reason=ProtocolViolation.INVALID_AUDIO,
        )
    return data


# -- authentication ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentAuthClaims:
    """The claims of the gateway's bearer token, as an agent sees them."""

    agent_id: str
    """``aud``: the agent the token is for."""
    call_id: str
    """``sub``: our call id (the same as ``start.call_id``)."""
    expires_at: int
    """``exp``, Unix seconds."""
    token_id: str
    """``jti``: unique per token, for agents that want to refuse replays."""


def issue_agent_token(
    secret: bytes, *, agent_id: str, call_id: str, now: float, ttl_s: int = DEFAULT_TOKEN_TTL_S
) -> str:
    """The bearer token the gateway sends when it connects to an agent.

    Args:
        secret: the agent's shared secret (at least 32 bytes).
        agent_id: becomes ``aud``.
        call_id: becomes ``sub``.
        now: current Unix time in seconds (``iat``).
        ttl_s: lifetime; the token only has to survive the WebSocket handshake.

    Raises:
        ConfigError: the secret is too short for HS256.
    """
    _check_secret(secret)
    iat = int(now)
    claims = {
        "iss": TOKEN_ISSUER,
        "aud": agent_id,
        "sub": call_id,
        "iat": iat,
        "exp": iat + ttl_s,
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_agent_token(
    token: str, secret: bytes, *, agent_id: str, now: float, leeway_s: int = 5
) -> AgentAuthClaims:
    """Check a bearer token the way an agent should (used by built-in agents and tests).

    Raises:
        AgentError: ``UNAUTHORIZED`` when forged, expired (beyond ``leeway_s``), not yet
            valid, for another agent, or not from the gateway.
    """
    _check_secret(secret)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],  # pinned: never let the token choose (RFC 8725 §3.1)
            audience=agent_id,
            issuer=TOKEN_ISSUER,
            # The clock is ours to pass in: PyJWT's own exp/iat checks read the wall clock.
            options={
                "require": ["exp", "iat", "sub", "jti"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise AgentError(
            f"agent token rejected: {type(exc).__name__}", reason=ProtocolViolation.UNAUTHORIZED
        ) from None
    exp, iat = claims["exp"], claims["iat"]
    if not (isinstance(exp, int) and isinstance(iat, int)):
        raise AgentError(
            "agent token times are not integers", reason=ProtocolViolation.UNAUTHORIZED
        )
    if now >= exp + leeway_s or now < iat - leeway_s:
        raise AgentError(
            "agent token is expired or not yet valid", reason=ProtocolViolation.UNAUTHORIZED
        )
    return AgentAuthClaims(agent_id, str(claims["sub"]), exp, str(claims["jti"]))


def _check_secret(secret: bytes) -> None:
    if len(secret) < _MIN_SECRET_BYTES:
        raise ConfigError(
            "agent secret", f"expected at least {_MIN_SECRET_BYTES} bytes, got {len(secret)}"
        )
