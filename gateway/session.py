"""The call's state machine: events and ``now`` in, actions and the next deadline out.

Pure: no asyncio, no sockets, no clock. The edge (:mod:`gateway.server.call`) feeds it
events (:mod:`gateway.call_events`) with ``now`` in monotonic seconds (``loop.time()``),
carries out the actions it returns, and calls :meth:`CallSession.handle` with
:class:`~gateway.call_events.Tick` when :meth:`CallSession.next_deadline` comes.

Phases and transitions (the table :data:`TRANSITIONS` is the whole truth; an event that
is not in it for the current phase raises :class:`~gateway.errors.StateError`)::

    AWAITING_START --MediaStarted--> CONNECTING --AgentConnected--> ACTIVE
         |                              |                             |
         | start timeout (Tick)         | AgentFailed                 | AgentFailed
         v                              v                             v
       ENDED <---- grace over (Tick) -- AGENT_LOST <------------------+
         ^                                                            |
         +--- PlayoutIdle / playout cap -- PLAYING_OUT <- AgentHungUp-+

From every live phase: CallerHungUp, HangupRequested, CarrierFailed, LeaseLost and the
max-duration deadline end the call. ENDED accepts nothing.

Billing (ARCHITECTURE.md, reliability.md 2.2): billable audio runs from the first audio
frame exchanged while the agent is connected to the end of the call, or to the moment
the agent failed (after that nothing is exchanged: the caller hears silence). A call
that never reached its agent bills 0. The ledger caps it at the max duration. The edge
passes the caller's media clock (``media_ms``: caller audio received so far) with each
event, and the span is the shorter of the two clocks' readings (:mod:`gateway.metering`):
a hang-up read late because the gateway was not scheduled bills no more than the caller
audio the carrier streamed.

Timers: the max duration runs from media start (the media socket, not the answer, is
what the carrier bills and what we can stop); the warning goes ``warning_s`` before it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from gateway.call_events import (
    Action,
    AgentConnected,
    AgentFailed,
    AgentHungUp,
    AudioExchanged,
    CallerHungUp,
    CarrierFailed,
    Checkpoint,
    EndCall,
    EndReason,
    Event,
    HangupRequested,
    LeaseLost,
    MediaStarted,
    PlayoutIdle,
    Tick,
    WarnAgent,
)
from gateway.errors import CloseCode, ConfigError, StateError
from gateway.metering import AudioMeter
from gateway.store.models import CallStatus

__all__ = ["TRANSITIONS", "CallSession", "Phase", "SessionConfig"]


class Phase(enum.StrEnum):
    """Where the call is."""

    AWAITING_START = "awaiting_start"
    """Media socket open, carrier ``start`` not yet accepted."""
    CONNECTING = "connecting"
    """Media started; the agent link is being opened."""
    ACTIVE = "active"
    """Caller and agent are bridged."""
    AGENT_LOST = "agent_lost"
    """The agent failed; the caller hears silence until the grace ends."""
    PLAYING_OUT = "playing_out"
    """The agent hung up; its last audio is still playing."""
    ENDED = "ended"


_LIVE = (Phase.AWAITING_START, Phase.CONNECTING, Phase.ACTIVE, Phase.AGENT_LOST, Phase.PLAYING_OUT)
_STARTED = (Phase.CONNECTING, Phase.ACTIVE, Phase.AGENT_LOST, Phase.PLAYING_OUT)

# What each event does in each phase: the name of the handler method.
TRANSITIONS: dict[tuple[Phase, type[Event]], str] = {
    (Phase.AWAITING_START, MediaStarted): "_on_media_started",
    (Phase.CONNECTING, AgentConnected): "_on_agent_connected",
    (Phase.CONNECTING, AgentFailed): "_on_agent_failed",
    (Phase.ACTIVE, AgentFailed): "_on_agent_failed",
    (Phase.ACTIVE, AgentHungUp): "_on_agent_hung_up",
    (Phase.ACTIVE, AudioExchanged): "_on_audio",
    (Phase.PLAYING_OUT, AudioExchanged): "_on_audio",
    (Phase.PLAYING_OUT, PlayoutIdle): "_on_playout_idle",
    (Phase.PLAYING_OUT, AgentFailed): "_on_ignored",  # it hung up: its socket may just go
    (Phase.AGENT_LOST, AgentFailed): "_on_ignored",
    **{(phase, AudioExchanged): "_on_ignored" for phase in (Phase.CONNECTING, Phase.AGENT_LOST)},
    **{(phase, PlayoutIdle): "_on_ignored" for phase in (Phase.ACTIVE, Phase.AGENT_LOST)},
    **{(phase, Tick): "_on_tick" for phase in _LIVE},
    **{(phase, CallerHungUp): "_on_caller_hung_up" for phase in _LIVE},
    **{(phase, HangupRequested): "_on_hangup_requested" for phase in _LIVE},
    **{(phase, CarrierFailed): "_on_carrier_failed" for phase in _LIVE},
    **{(phase, LeaseLost): "_on_lease_lost" for phase in _STARTED},
}
"""(phase, event type) → handler. Anything missing is an illegal move."""

# End reasons that leave the caller on the line: the carrier's REST hang-up ends the leg.
_CARRIER_HANGUP = frozenset(
    {
        EndReason.AGENT_HANGUP,
        EndReason.MAX_DURATION,
        EndReason.AGENT_ERROR,
        EndReason.ADMIN_HANGUP,
        EndReason.BALANCE_DEPLETED,
        EndReason.DRAIN,
        EndReason.INTERNAL_ERROR,
    }
)
_FAILED = frozenset(
    {
        EndReason.AGENT_ERROR,
        EndReason.START_TIMEOUT,
        EndReason.CARRIER_ERROR,
        EndReason.LEASE_LOST,
        EndReason.INTERNAL_ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """One call's limits, in seconds.

    Raises:
        ConfigError: a value is out of range.
    """

    max_duration_s: float
    """The call is ended this long after media start (the agent's maxCallDuration,
    or a gateway-wide cap when lower)."""
    warning_s: float = 30.0
    """``duration_warning`` goes this long before the limit (0 = no warning)."""
    start_timeout_s: float = 5.0
    """The carrier must send ``start`` within this long of the socket opening."""
    agent_grace_s: float = 2.0
    """Silence the caller hears after the agent failed, before the hang-up."""
    playout_cap_s: float = 10.0
    """Longest wait for the agent's last audio to play after its ``hangup``."""
    checkpoint_interval_s: float = 5.0
    """Usage checkpoints this often once audio flows."""

    def __post_init__(self) -> None:
        checks = (
            ("max_duration_s", self.max_duration_s, 0.1, 7200.0),
            ("warning_s", self.warning_s, 0.0, 7200.0),
            ("start_timeout_s", self.start_timeout_s, 0.1, 60.0),
            ("agent_grace_s", self.agent_grace_s, 0.0, 60.0),
            ("playout_cap_s", self.playout_cap_s, 0.0, 600.0),
            ("checkpoint_interval_s", self.checkpoint_interval_s, 0.05, 60.0),
        )
        for name, value, low, high in checks:
            if not low <= value <= high:
                raise ConfigError(f"session {name}", f"expected {low}-{high} s, got {value}")


class CallSession:
    """One call's decisions; see the module docstring.

    Args:
        config: the call's limits.
        now: when the media socket was accepted (monotonic seconds).
    """

    def __init__(self, config: SessionConfig, now: float) -> None:
        self.config = config
        self.phase = Phase.AWAITING_START
        self.end: EndCall | None = None
        self._meter = AudioMeter()
        self._start_deadline = now + config.start_timeout_s
        self._max_end: float | None = None
        self._warn_at: float | None = None
        self._grace_end: float | None = None
        self._playout_end: float | None = None
        self._next_checkpoint: float | None = None
        self._billing_stop_ms: int | None = None  # the agent failed here: billing stops
        self._media_ms: int | None = None  # the caller's media clock at the last event
        self._billing_stop_media_ms: int | None = None

    # -- queries ---------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """Whether :class:`EndCall` was returned."""
        return self.phase is Phase.ENDED

    @property
    def billing_started(self) -> bool:
        """Whether the first audio was exchanged (later :class:`AudioExchanged` is moot)."""
        return self._meter.first_audio_ms is not None

    def audio_ms(self, now: float) -> int:
        """Billable audio so far, in milliseconds (media clock: the last event's)."""
        now_ms, media_ms = _ms(now), self._media_ms
        if self._billing_stop_ms is not None:
            now_ms = min(now_ms, self._billing_stop_ms)
            media_ms = self._billing_stop_media_ms
        return self._meter.audio_ms(now_ms, media_ms)

    def next_deadline(self) -> float | None:
        """When to send :class:`Tick` next (monotonic s), or None (nothing timed)."""
        if self.phase is Phase.ENDED:
            return None
        if self.phase is Phase.AWAITING_START:
            return self._start_deadline
        times = (
            self._max_end,
            self._warn_at,
            self._grace_end,
            self._playout_end,
            self._next_checkpoint,
        )
        pending = [t for t in times if t is not None]
        return min(pending) if pending else None

    # -- the one entry point -----------------------------------------------------------------

    def handle(self, event: Event, now: float, media_ms: int | None = None) -> list[Action]:
        """Apply ``event`` at ``now``; returns the actions to carry out, in order.

        ``media_ms`` is the caller's media clock (ms of caller audio received so far),
        where the edge knows it; billing reads the shorter of it and ``now``.

        Raises:
            StateError: the event is not allowed in the current phase.
        """
        name = TRANSITIONS.get((self.phase, type(event)))
        if name is None:
            raise StateError(f"call session: {type(event).__name__} not allowed while {self.phase}")
        if media_ms is not None:
            self._media_ms = media_ms
        handler: Callable[[Event, float], list[Action]] = getattr(self, name)
        return handler(event, now)

    # -- handlers ----------------------------------------------------------------------------

    def _on_ignored(self, event: Event, now: float) -> list[Action]:
        return []

    def _on_media_started(self, event: Event, now: float) -> list[Action]:
        cfg = self.config
        self.phase = Phase.CONNECTING
        self._max_end = now + cfg.max_duration_s
        if 0 < cfg.warning_s < cfg.max_duration_s:
            self._warn_at = self._max_end - cfg.warning_s
        return []

    def _on_agent_connected(self, event: Event, now: float) -> list[Action]:
        self.phase = Phase.ACTIVE
        return []

    def _on_audio(self, event: Event, now: float) -> list[Action]:
        if not self.billing_started:
            self._meter.audio(_ms(now), self._media_ms)
            self._next_checkpoint = now + self.config.checkpoint_interval_s
        return []

    def _on_agent_failed(self, event: Event, now: float) -> list[Action]:
        self.phase = Phase.AGENT_LOST
        self._billing_stop_ms = _ms(now)
        self._billing_stop_media_ms = self._media_ms
        self._grace_end = now + self.config.agent_grace_s
        return []

    def _on_agent_hung_up(self, event: Event, now: float) -> list[Action]:
        self.phase = Phase.PLAYING_OUT
        self._playout_end = now + self.config.playout_cap_s
        return []

    def _on_playout_idle(self, event: Event, now: float) -> list[Action]:
        return [self._end(EndReason.AGENT_HANGUP, now)]

    def _on_caller_hung_up(self, event: Event, now: float) -> list[Action]:
        if self.phase is Phase.AGENT_LOST:
            return [self._end(EndReason.AGENT_ERROR, now, carrier_hangup=False)]
        return [self._end(EndReason.CALLER_HANGUP, now)]

    def _on_hangup_requested(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, HangupRequested)
        return [self._end(event.reason, now)]

    def _on_carrier_failed(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, CarrierFailed)
        return [self._end(EndReason.CARRIER_ERROR, now, close_code=event.close_code)]

    def _on_lease_lost(self, event: Event, now: float) -> list[Action]:
        return [self._end(EndReason.LEASE_LOST, now, finalize=False)]

    def _on_tick(self, event: Event, now: float) -> list[Action]:
        if self.phase is Phase.AWAITING_START:
            if now >= self._start_deadline:
                return [self._end(EndReason.START_TIMEOUT, now, close_code=CloseCode.START_TIMEOUT)]
            return []
        if self._max_end is not None and now >= self._max_end:
            return [self._end(EndReason.MAX_DURATION, now)]
        if self._grace_end is not None and now >= self._grace_end:
            return [self._end(EndReason.AGENT_ERROR, now)]
        if self._playout_end is not None and now >= self._playout_end:
            return [self._end(EndReason.AGENT_HANGUP, now)]
        actions: list[Action] = []
        if self._warn_at is not None and now >= self._warn_at:
            assert self._max_end is not None
            self._warn_at = None
            actions.append(WarnAgent(max(0, round(self._max_end - now))))
        if self._next_checkpoint is not None and now >= self._next_checkpoint:
            self._next_checkpoint = now + self.config.checkpoint_interval_s
            actions.append(Checkpoint(self.audio_ms(now)))
        return actions

    def _end(
        self,
        reason: EndReason,
        now: float,
        *,
        carrier_hangup: bool | None = None,
        close_code: CloseCode = CloseCode.NORMAL,
        finalize: bool = True,
    ) -> EndCall:
        hangup = reason in _CARRIER_HANGUP if carrier_hangup is None else carrier_hangup
        status = CallStatus.FAILED if reason in _FAILED else CallStatus.COMPLETED
        self.end = EndCall(reason, status, self.audio_ms(now), hangup, close_code, finalize)
        self.phase = Phase.ENDED
        return self.end


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
