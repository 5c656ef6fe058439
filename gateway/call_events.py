"""What happens to a call (events in) and what the session asks for (actions out).

The call session (:mod:`gateway.session`) is a pure state machine: the edges turn
sockets, timers and commands into these frozen events, pass them in with ``now``, and
carry out the actions that come back. Nothing here holds audio: per-frame work (codecs,
pacing) stays on the fast path in :mod:`gateway.media`, and the session only hears about
audio once, when billing starts (:class:`AudioExchanged`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import CloseCode
from gateway.store.models import CallStatus

__all__ = [
    "Action",
    "AgentConnected",
    "AgentFailed",
    "AgentHungUp",
    "AudioExchanged",
    "CallerHungUp",
    "CarrierFailed",
    "Checkpoint",
    "EndCall",
    "EndReason",
    "Event",
    "HangupRequested",
    "LeaseLost",
    "MediaStarted",
    "PlayoutIdle",
    "Tick",
    "WarnAgent",
]


class EndReason(StrEnum):
    """Why a call ended: the stable ``end_reason`` of the call record and agent ``stop``.

    Add codes; never rename or reuse one (dashboards and tenants rely on them).
    """

    CALLER_HANGUP = "caller_hangup"
    """The carrier stopped the stream or closed the socket (the caller hung up)."""
    AGENT_HANGUP = "agent_hangup"
    """The agent sent ``hangup``; the call ended once its audio had played."""
    MAX_DURATION = "max_duration"
    """The agent's maxCallDuration (or the gateway's cap) was reached."""
    AGENT_ERROR = "agent_error"
    """The agent was unreachable or failed; the call ended after a grace of silence."""
    ADMIN_HANGUP = "admin_hangup"
    """An operator or the API asked for the call to end (coordination command)."""
    BALANCE_DEPLETED = "balance_depleted"
    """The tenant's balance ran out (a command with that reason)."""
    DRAIN = "drain"
    """The gateway is shutting down and ended the call."""
    START_TIMEOUT = "start_timeout"
    """The media socket opened but the carrier never sent ``start`` in time."""
    CARRIER_ERROR = "carrier_error"
    """The carrier broke its media protocol."""
    LEASE_LOST = "lease_lost"
    """Another gateway instance owns this call now (fenced); this copy stops."""
    INTERNAL_ERROR = "internal_error"
    """A bug in the gateway ended the call; it is still finalized and released."""


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaStarted:
    """The carrier's ``start`` arrived and was accepted (token bound, lease claimed)."""


@dataclass(frozen=True, slots=True)
class AgentConnected:
    """The agent link is open and ``start`` was sent to the agent."""


@dataclass(frozen=True, slots=True)
class AudioExchanged:
    """A media frame carrying audio passed, in either direction (billing starts at the
    first one). The edge may stop sending it once :attr:`CallSession.billing_started`."""


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    """The carrier ended the stream (``stop``) or the socket closed."""

    how: str = "stop"
    """``"stop"`` or ``"closed"`` (:class:`gateway.carriers.StreamStopped`)."""


@dataclass(frozen=True, slots=True)
class AgentHungUp:
    """The agent sent ``hangup``; the call ends once what it sent has played."""

    detail: str | None = None
    """The agent's free-text reason (kept in logs, not a code)."""


@dataclass(frozen=True, slots=True)
class AgentFailed:
    """The agent link failed (unreachable at start, or mid-call)."""

    reason: str
    """The link's failure code (``unreachable``, ``agent_closed``, ...)."""


@dataclass(frozen=True, slots=True)
class PlayoutIdle:
    """Everything the agent sent has been heard (the pacer is empty and caught up)."""


@dataclass(frozen=True, slots=True)
class HangupRequested:
    """End the call for an outside reason: admin/API command, drain, balance."""

    reason: EndReason


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """The lease renew said FENCED or RELEASED: this instance no longer owns the call."""


@dataclass(frozen=True, slots=True)
class CarrierFailed:
    """The carrier's socket broke the media protocol."""

    close_code: CloseCode


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: the session's deadline (:meth:`CallSession.next_deadline`) came."""


Event = (
    MediaStarted
    | AgentConnected
    | AudioExchanged
    | CallerHungUp
    | AgentHungUp
    | AgentFailed
    | PlayoutIdle
    | HangupRequested
    | LeaseLost
    | CarrierFailed
    | Tick
)
"""Anything :meth:`CallSession.handle` accepts."""


# -- actions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WarnAgent:
    """Send the agent ``duration_warning``."""

    seconds_left: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Write a usage checkpoint: cumulative billable audio so far."""

    audio_ms: int


@dataclass(frozen=True, slots=True)
class EndCall:
    """End the call now; the edge runs its ending sequence (docs/call-engine.md)."""

    reason: EndReason
    status: CallStatus
    """Final status for the call record."""
    audio_ms: int
    """Billable audio measured by this session, in ms (the ledger keeps the larger of
    this and the last checkpoint)."""
    carrier_hangup: bool
    """Also end the call through the carrier's REST API (the caller is still there)."""
    close_code: CloseCode
    """Close code for the carrier's media socket."""
    finalize: bool = True
    """Write the final record and release the lease (False when fenced: the owner does)."""


Action = WarnAgent | Checkpoint | EndCall
"""Anything :meth:`CallSession.handle` returns."""
