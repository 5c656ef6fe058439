"""The pure call session: transition table, deadlines, every end path, billing inputs.

No sockets and no clock: ``now`` is passed in, so every deadline is checked exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.call_events import (
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
from gateway.server.limits import MessageRate
from gateway.session import TRANSITIONS, CallSession, Phase, SessionConfig
from gateway.store.models import CallStatus

CONFIG = SessionConfig(
    max_duration_s=60,
    warning_s=10,
    start_timeout_s=5,
    agent_grace_s=2,
    playout_cap_s=4,
    checkpoint_interval_s=5,
)


def active(at: float = 100.0) -> CallSession:
    """A session bridged at ``at`` (media start and agent connected)."""
    session = CallSession(CONFIG, at - 1)
    assert session.handle(MediaStarted(), at) == []
    assert session.handle(AgentConnected(), at) == []
    return session


def ended(actions: Sequence[object]) -> EndCall:
    assert len(actions) == 1
    assert isinstance(actions[0], EndCall)
    return actions[0]


# -- the table ---------------------------------------------------------------------------


def test_illegal_moves_raise() -> None:
    session = CallSession(CONFIG, 0)
    with pytest.raises(StateError, match="AgentConnected not allowed while awaiting_start"):
        session.handle(AgentConnected(), 0)
    session.handle(MediaStarted(), 1)
    with pytest.raises(StateError):
        session.handle(MediaStarted(), 1)
    with pytest.raises(StateError):
        CallSession(CONFIG, 0).handle(LeaseLost(), 0)  # no lease before media starts
    session.handle(CallerHungUp(), 2)
    for event in (Tick(), CallerHungUp(), AudioExchanged(), HangupRequested(EndReason.DRAIN)):
        with pytest.raises(StateError, match="while ended"):
            session.handle(event, 3)


def test_every_live_phase_can_end_and_ended_accepts_nothing() -> None:
    live = {phase for phase, _ in TRANSITIONS}
    assert Phase.ENDED not in live
    for phase in live:
        assert (phase, CallerHungUp) in TRANSITIONS
        assert (phase, HangupRequested) in TRANSITIONS
        assert (phase, Tick) in TRANSITIONS


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="max_duration_s"):
        SessionConfig(max_duration_s=0)
    with pytest.raises(ConfigError, match="start_timeout_s"):
        SessionConfig(max_duration_s=30, start_timeout_s=0)


# -- deadlines ---------------------------------------------------------------------------


def test_start_timeout() -> None:
    session = CallSession(CONFIG, 10)
    assert session.next_deadline() == 15
    assert session.handle(Tick(), 14.9) == []
    end = ended(session.handle(Tick(), 15))
    assert (end.reason, end.status, end.close_code) == (
        EndReason.START_TIMEOUT,
        CallStatus.FAILED,
        CloseCode.START_TIMEOUT,
    )
    assert end.audio_ms == 0
    assert not end.carrier_hangup
    assert session.next_deadline() is None


def test_warning_then_max_duration() -> None:
    session = active(100)
    assert session.next_deadline() == 150  # warning at max - 10 s
    assert session.handle(Tick(), 150) == [WarnAgent(10)]
    assert session.next_deadline() == 160
    end = ended(session.handle(Tick(), 160))
    assert end.reason is EndReason.MAX_DURATION
    assert end.carrier_hangup
    assert end.status is CallStatus.COMPLETED


def test_no_warning_when_it_would_come_before_the_call() -> None:
    session = CallSession(SessionConfig(max_duration_s=5, warning_s=10), 0)
    session.handle(MediaStarted(), 0)
    assert session.next_deadline() == 5


def test_checkpoints_every_interval_once_audio_flows() -> None:
    session = active(100)
    session.handle(AudioExchanged(), 101)
    assert session.billing_started
    assert session.next_deadline() == 106
    assert session.handle(Tick(), 106) == [Checkpoint(5000)]
    assert session.next_deadline() == 111
    assert session.handle(Tick(), 111.5) == [Checkpoint(10_500)]


# -- end paths ---------------------------------------------------------------------------


def test_caller_hangup() -> None:
    session = active(100)
    session.handle(AudioExchanged(), 100.5)
    end = ended(session.handle(CallerHungUp("closed"), 112.5))
    assert (end.reason, end.audio_ms, end.carrier_hangup) == (
        EndReason.CALLER_HANGUP,
        12_000,
        False,
    )
    assert end.finalize


def test_a_hangup_read_late_bills_the_caller_audio_streamed() -> None:
    # The gateway was not scheduled for 230 ms when the hang-up arrived; the caller's
    # media clock (audio received) says the carrier streamed 60 s after the first audio.
    session = active(100)
    session.handle(AudioExchanged(), 100.5, media_ms=480)
    assert session.handle(Tick(), 105.5, media_ms=5_380) == [Checkpoint(4_900)]
    end = ended(session.handle(CallerHungUp("stop"), 160.73, media_ms=60_480))
    assert end.audio_ms == 60_000
    assert end.audio_ms < round((160.73 - 100.5) * 1000)  # the gateway's clock alone


def test_agent_failure_stops_both_clocks() -> None:
    session = active(100)
    session.handle(AudioExchanged(), 100, media_ms=0)
    session.handle(AgentFailed("agent_closed"), 103, media_ms=2_900)
    end = ended(session.handle(Tick(), 105, media_ms=4_900))
    assert end.audio_ms == 2_900  # the media clock at the failure, not at the hang-up


def test_agent_hangup_waits_for_playout() -> None:
    session = active(100)
    session.handle(AudioExchanged(), 100)
    assert session.handle(AgentHungUp("bye"), 105) == []
    assert session.phase is Phase.PLAYING_OUT
    end = ended(session.handle(PlayoutIdle(), 106))
    assert end.reason is EndReason.AGENT_HANGUP
    assert end.carrier_hangup
    assert end.audio_ms == 6000


def test_agent_hangup_playout_is_capped() -> None:
    session = active(100)
    session.handle(AgentHungUp(), 105)
    assert session.next_deadline() == 109
    assert ended(session.handle(Tick(), 109)).reason is EndReason.AGENT_HANGUP


def test_agent_failure_mid_call_stops_billing_then_hangs_up_after_grace() -> None:
    session = active(100)
    session.handle(AudioExchanged(), 100)
    session.handle(AgentFailed("agent_closed"), 103)
    assert session.phase is Phase.AGENT_LOST
    assert session.handle(AudioExchanged(), 104) == []  # caller audio is not exchanged now
    assert session.next_deadline() == 105
    end = ended(session.handle(Tick(), 105))
    assert (end.reason, end.status, end.carrier_hangup) == (
        EndReason.AGENT_ERROR,
        CallStatus.FAILED,
        True,
    )
    assert end.audio_ms == 3000  # first audio to the failure, not to the hang-up


def test_agent_down_at_start_bills_nothing() -> None:
    session = CallSession(CONFIG, 0)
    session.handle(MediaStarted(), 0)
    session.handle(AgentFailed("unreachable"), 5)
    end = ended(session.handle(Tick(), 7))
    assert end.reason is EndReason.AGENT_ERROR
    assert end.audio_ms == 0


def test_caller_hanging_up_during_the_grace_keeps_agent_error() -> None:
    session = active(100)
    session.handle(AgentFailed("timeout"), 101)
    end = ended(session.handle(CallerHungUp(), 102))
    assert end.reason is EndReason.AGENT_ERROR
    assert not end.carrier_hangup


@pytest.mark.parametrize(
    "reason", [EndReason.ADMIN_HANGUP, EndReason.DRAIN, EndReason.BALANCE_DEPLETED]
)
def test_requested_hangups(reason: EndReason) -> None:
    session = active(100)
    end = ended(session.handle(HangupRequested(reason), 101))
    assert end.reason is reason
    assert end.carrier_hangup
    assert end.status is CallStatus.COMPLETED


def test_carrier_failure_keeps_its_close_code() -> None:
    session = active(100)
    end = ended(session.handle(CarrierFailed(CloseCode.MESSAGE_TOO_BIG), 101))
    assert end.reason is EndReason.CARRIER_ERROR
    assert end.close_code is CloseCode.MESSAGE_TOO_BIG
    assert end.status is CallStatus.FAILED
    assert not end.carrier_hangup


def test_lost_lease_ends_without_finalizing() -> None:
    session = active(100)
    end = ended(session.handle(LeaseLost(), 101))
    assert end.reason is EndReason.LEASE_LOST
    assert not end.finalize


def test_audio_before_the_agent_is_connected_is_not_billed() -> None:
    session = CallSession(CONFIG, 0)
    session.handle(MediaStarted(), 0)
    session.handle(AudioExchanged(), 0.5)
    assert not session.billing_started
    session.handle(AgentConnected(), 1)
    session.handle(AudioExchanged(), 1.2)
    assert session.audio_ms(3.2) == 2000


# -- properties --------------------------------------------------------------------------

_EVENTS: list[Event] = [
    MediaStarted(),
    AgentConnected(),
    AudioExchanged(),
    CallerHungUp(),
    AgentHungUp(),
    AgentFailed("x"),
    PlayoutIdle(),
    HangupRequested(EndReason.ADMIN_HANGUP),
    LeaseLost(),
    CarrierFailed(CloseCode.PROTOCOL_ERROR),
    Tick(),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_EVENTS), st.floats(0, 20)), max_size=25))
def test_any_event_sequence_ends_at_most_once_with_sane_billing(
    steps: list[tuple[Event, float]],
) -> None:
    session = CallSession(CONFIG, 0)
    now, ends = 0.0, []
    for event, delta in steps:
        now += delta
        try:
            actions = session.handle(event, now)
        except StateError:
            assert (session.phase, type(event)) not in TRANSITIONS
            continue
        ends += [a for a in actions if isinstance(a, EndCall)]
        deadline = session.next_deadline()
        assert deadline is None or not session.ended
    assert len(ends) <= 1
    if ends:
        assert session.ended
        assert ends[0] is session.end
        assert 0 <= ends[0].audio_ms <= round(now * 1000)


# -- the message rate limit --------------------------------------------------------------


def test_message_rate_allows_bursts_and_refuses_a_sustained_flood() -> None:
    rate = MessageRate(limit=10, window_s=2)
    assert all(rate.allow(0.0 + i / 100) for i in range(30))  # one second over: a burst
    assert all(rate.allow(5.0 + i / 100) for i in range(10))  # quiet gap resets
    assert all(rate.allow(6.0 + i / 100) for i in range(10))
    flood = [rate.allow(7.0 + i / 1000) for i in range(20)]
    assert all(flood[:10])
    assert all(flood[10:])
    refused = [rate.allow(8.0 + i / 1000) for i in range(20)]
    assert all(refused[:10])
    assert not any(refused[10:])
