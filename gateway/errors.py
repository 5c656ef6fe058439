"""The gateway's one exception tree.

Every error the gateway raises on purpose is a :class:`GatewayError`. Each class says
who is to blame (the peer, the operator's configuration, a backend, or our own state)
and carries what the edge needs to act on it (a WebSocket close code, an HTTP status, a
stable reason code)::

    GatewayError
    ├── ConfigError                 settings or stored values out of range; names the field
    │   └── ValidationError         an API/admin value is invalid (HTTP 400)
    ├── CarrierError
    │   ├── UnknownCarrierError     no adapter by that name
    │   ├── CarrierProtocolError    the carrier sent something invalid; .close_code hint
    │   ├── SignatureError          a request or upgrade is not signed by the tenant's key (403)
    │   ├── CommandError            we asked a media stream for something it cannot send
    │   └── CarrierApiError         the carrier's REST API refused credentials or failed
    ├── CallTokenError              the media URL's call token is bad, expired or reused
    ├── StateError                  backend failure (SQL, Redis); the driver error is __cause__
    │   └── CoordinationUnavailable Redis (or the coordination backend) cannot be reached
    ├── NotFoundError               no such tenant / agent / number / call (HTTP 404)
    ├── ConflictError               a unique thing already belongs to someone else (HTTP 409)
    ├── SecretError                 a ciphertext does not decrypt under the key and tenant given
    ├── AuthError                   an API request has no valid credentials (HTTP 401)
    ├── RateLimitedError            too many requests; .retry_after in seconds (HTTP 429)
    └── AgentError                  the agent pipeline is unreachable or broke the protocol
        └── UnknownBuiltinError     a pipeline names a built-in agent that does not exist

The audio library ``rymi_codecs`` sits below the gateway and has its own small tree rooted
at ``rymi_codecs.CodecError`` (a ``ValueError``); carrier adapters turn codec errors caused by
a peer's bad data into :class:`CarrierProtocolError`.

Messages never contain secrets or audio: they name the field, the expected shape and, for
numbers, the allowed range.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AgentError",
    "AuthError",
    "CallTokenError",
    "CarrierApiError",
    "CarrierError",
    "CarrierProtocolError",
    "CloseCode",
    "CommandError",
    "ConfigError",
    "ConflictError",
    "CoordinationUnavailable",
    "GatewayError",
    "NotFoundError",
    "RateLimitedError",
    "SecretError",
    "SignatureError",
    "StateError",
    "UnknownBuiltinError",
    "UnknownCarrierError",
    "ValidationError",
]


class CloseCode(IntEnum):
    """WebSocket close codes the gateway uses (RFC 6455 section 7.4.1, plus 4000-4999)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007  # e.g. invalid UTF-8 or JSON that does not parse
    POLICY_VIOLATION = 1008  # e.g. bad call token, rate limit exceeded
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # draining
    # Private-use range (RFC 6455 section 7.4.2).
    START_TIMEOUT = 4000
    CALL_ENDED = 4001


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A setting (or a stored configuration value) is missing or out of range.

    Args:
        field: the setting's name as the operator writes it (e.g. ``RYMI_PORT``).
        problem: what is wrong, including the allowed range or shape.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ValidationError(ConfigError):
    """A value given through the API or the admin CLI is invalid (HTTP 400)."""


class CarrierError(GatewayError):
    """Something about a carrier: its name, its messages or its signatures."""


class UnknownCarrierError(CarrierError, LookupError):
    """No carrier adapter is registered under the given name."""


class CarrierProtocolError(CarrierError):
    """The carrier (or whoever plays it) sent a message we cannot accept.

    Args:
        carrier: adapter name, e.g. ``"twilio"``.
        message: what was wrong, never the payload itself.
        close_code: the WebSocket close code the edge should use to close that socket.
    """

    def __init__(
        self, carrier: str, message: str, close_code: int = CloseCode.PROTOCOL_ERROR
    ) -> None:
        super().__init__(f"{carrier}: {message}")
        self.carrier = carrier
        self.close_code = int(close_code)


class SignatureError(CarrierError):
    """A request is not signed by the credential we hold for that tenant (HTTP 403)."""


class CommandError(CarrierError):
    """A media command does not fit the stream (our side's fault, not the carrier's).

    E.g. DTMF on a carrier whose socket cannot send it, audio that is not whole 20 ms
    frames of the stream's format, a command before the stream started.
    """


class CarrierApiError(CarrierError):
    """A carrier's REST API refused the tenant's credentials or could not be used.

    Args:
        carrier: carrier name, e.g. ``"twilio"``.
        message: what happened, never the credentials or the response body.
        rejected: True when the carrier said the credentials are wrong (HTTP 401 at
            the API edge); False when it failed or could not be reached (HTTP 502).
    """

    def __init__(self, carrier: str, message: str, *, rejected: bool) -> None:
        super().__init__(f"{carrier}: {message}")
        self.carrier = carrier
        self.rejected = rejected


class CallTokenError(GatewayError):
    """A media URL's call token is malformed, forged, expired, reused or for another call.

    Args:
        message: what was wrong, never the token itself.
        reason: stable code (``gateway.calltoken.TokenRejection``), e.g. ``"expired"``.
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class StateError(GatewayError):
    """A state backend (SQL database, Redis) failed; the driver's exception is ``__cause__``."""


class CoordinationUnavailable(StateError):
    """The coordination backend cannot be reached: new calls are refused (fail closed)."""


class NotFoundError(GatewayError, LookupError):
    """No such tenant, agent, number, key or call (or it belongs to another tenant)."""


class ConflictError(GatewayError):
    """A unique value (e.g. a phone number) already belongs to another owner."""


class SecretError(GatewayError):
    """A stored secret does not decrypt under the keys and tenant binding given."""


class AuthError(GatewayError):
    """An API request carries no valid credentials, or ones not allowed there (HTTP 401).

    Args:
        message: what was wrong, never the key itself.
        code: stable snake_case code for the error body, e.g. ``"invalid_api_key"``.
    """

    def __init__(self, message: str, *, code: str = "unauthorized") -> None:
        super().__init__(message)
        self.code = code


class RateLimitedError(GatewayError):
    """Too many requests or attempts in a window (HTTP 429 with ``Retry-After``).

    Args:
        message: which limit was hit.
        retry_after: seconds until asking again may succeed.
        code: stable snake_case code, e.g. ``"rate_limited"``.
    """

    def __init__(self, message: str, *, retry_after: float, code: str = "rate_limited") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class AgentError(GatewayError):
    """The agent pipeline cannot be reached or broke the agent protocol.

    Args:
        message: what was wrong, never the payload itself.
        reason: stable code, e.g. ``"malformed"`` or ``"too_large"``
            (``gateway.bridge.protocol.ProtocolViolation``).
    """

    def __init__(self, message: str, *, reason: str = "agent_error") -> None:
        super().__init__(message)
        self.reason = reason


class UnknownBuiltinError(AgentError, LookupError):
    """No built-in agent is registered under the name an agent's pipeline gives."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="unknown_builtin")
