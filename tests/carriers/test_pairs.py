"""Gateway role and carrier role talking to each other, no socket, for every carrier."""

from __future__ import annotations

import pytest

from gateway.carriers import (
    AudioReceived,
    ClearPlayback,
    DtmfReceived,
    Event,
    Mark,
    MarkPlayed,
    MediaStream,
    PlayAudio,
    PlaybackCleared,
    SendDtmf,
    StreamStarted,
    StreamStopped,
    WireMessage,
    get,
)
from gateway.carriers.base import CarrierSide
from gateway.carriers.plivo import PlivoAdapter
from gateway.errors import CommandError

CARRIERS = ["twilio", "plivo", "vonage"]


def feed(stream: MediaStream, messages: list[WireMessage]) -> list[Event]:
    return [event for message in messages for event in stream.receive(message)]


def deliver(carrier: CarrierSide, messages: list[WireMessage]) -> list[WireMessage]:
    return [reply for message in messages for reply in carrier.receive(message)]


@pytest.mark.parametrize("name", CARRIERS)
def test_full_call(name: str) -> None:
    adapter = get(name)
    carrier = adapter.simulate_carrier("call-1", {"tenant": "t1"})
    gw = adapter.open_stream()

    started = feed(gw, carrier.open())
    assert len(started) == 1
    assert isinstance(started[0], StreamStarted)
    start = started[0]
    assert start.call_id == "call-1"
    assert start.custom_parameters["tenant"] == "t1"
    fmt = start.audio_format
    frame = fmt.bytes_per_frame()

    # Caller audio in.
    caller = (
        bytes(range(256))[:frame]
        if frame <= 256
        else bytes(range(256)) * (frame // 256) + bytes(frame % 256)
    )
    (audio,) = gw.receive(carrier.audio(caller))
    assert isinstance(audio, AudioReceived)
    assert audio.payload == caller
    assert audio.audio_format == fmt

    # Agent audio out, then a mark that is acknowledged once played.
    agent = bytes([0x55]) * (frame * 3)
    assert deliver(carrier, gw.send(PlayAudio(agent))) == []
    assert deliver(carrier, gw.send(Mark("utt-1"))) == []
    assert carrier.advance(40) == []  # 2 of 3 frames played: mark not reached yet
    acks = carrier.advance(20)
    assert feed(gw, acks) == [MarkPlayed("utt-1")]
    assert carrier.take_played() == agent

    # Barge-in: audio + a pending mark, then clear.
    deliver(carrier, gw.send(PlayAudio(agent)))
    deliver(carrier, gw.send(Mark("utt-2")))
    carrier.advance(20)
    replies = deliver(carrier, gw.send(ClearPlayback()))
    replies += carrier.advance(1000)
    assert feed(gw, replies) == [PlaybackCleared(("utt-2",))]
    assert carrier.take_played() == agent[:frame]

    # A mark on an empty buffer is acknowledged at once.
    assert feed(gw, deliver(carrier, gw.send(Mark("utt-3")))) == [MarkPlayed("utt-3")]

    # DTMF from the caller.
    (dtmf,) = gw.receive(carrier.dtmf("7"))
    assert isinstance(dtmf, DtmfReceived)
    assert dtmf.digit == "7"

    # Stop: a stop event where the carrier sends one, else the socket close.
    events = feed(gw, carrier.stop()) + gw.connection_closed()
    assert events == [StreamStopped("stop" if name != "vonage" else "closed")]
    assert gw.connection_closed() == []


def test_plivo_sends_dtmf_others_refuse() -> None:
    adapter = get("plivo")
    carrier = adapter.simulate_carrier("c", {})
    gw = adapter.open_stream()
    feed(gw, carrier.open())
    deliver(carrier, gw.send(SendDtmf("12#")))
    assert carrier.dtmf_played == ["12#"]  # type: ignore[attr-defined]
    with pytest.raises(CommandError, match="DTMF"):
        gw.send(SendDtmf("x"))
    for name in ("twilio", "vonage"):
        other = get(name)
        stream = other.open_stream()
        feed(stream, other.simulate_carrier("c", {}).open())
        with pytest.raises(CommandError, match="DTMF"):
            stream.send(SendDtmf("1"))


@pytest.mark.parametrize("content_type", ["audio/x-l16;rate=8000", "audio/x-l16;rate=16000"])
def test_plivo_l16_streams(content_type: str) -> None:
    adapter = PlivoAdapter(content_type)
    carrier = adapter.simulate_carrier("c", {})
    gw = adapter.open_stream()
    (start,) = feed(gw, carrier.open())
    assert isinstance(start, StreamStarted)
    frame = start.audio_format.bytes_per_frame()
    assert frame == start.audio_format.sample_rate // 25
    deliver(carrier, gw.send(PlayAudio(b"\x01\x00" * (frame // 2))))
    carrier.advance(20)
    assert len(carrier.take_played()) == frame


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_vonage_rates_and_multi_frame_play(rate: int) -> None:
    adapter = get("vonage")
    carrier = adapter.simulate_carrier("c", {}, rate=rate)
    gw = adapter.open_stream()
    (start,) = feed(gw, carrier.open())
    assert isinstance(start, StreamStarted)
    frame = rate // 25
    messages = gw.send(PlayAudio(bytes(frame * 3)))
    assert [len(m) for m in messages] == [frame] * 3
    deliver(carrier, messages)


@pytest.mark.parametrize("name", CARRIERS)
def test_command_errors(name: str) -> None:
    adapter = get(name)
    gw = adapter.open_stream()
    with pytest.raises(CommandError, match="new stream"):
        gw.send(Mark("m"))
    feed(gw, adapter.simulate_carrier("c", {}).open())
    for payload in (b"", b"\x00" * 7):
        with pytest.raises(CommandError, match="20 ms"):
            gw.send(PlayAudio(payload))
    gw.send(Mark("dup"))
    for bad in ("dup", "", "rymi-clear-1", "x" * 300):
        with pytest.raises(CommandError, match="mark"):
            gw.send(Mark(bad))


def test_mark_acks_that_are_not_ours_are_ignored() -> None:
    adapter = get("twilio")
    carrier = adapter.simulate_carrier("c", {})
    gw = adapter.open_stream()
    feed(gw, carrier.open())
    # Echo for a mark we never sent, and a clear echo with no clear outstanding.
    echo = carrier._echo(["stranger", "rymi-clear-9"])  # type: ignore[attr-defined]
    assert feed(gw, echo) == []


@pytest.mark.parametrize("name", CARRIERS)
def test_audio_message_is_the_play_audio_message(name: str) -> None:
    """The paced writer's shortcut sends what send(PlayAudio) sends, and the carrier plays it."""
    adapter = get(name)
    carrier = adapter.simulate_carrier("c", {})
    gw = adapter.open_stream()
    with pytest.raises(CommandError, match="new stream"):
        gw.audio_message(b"\x00" * 160)
    (start,) = feed(gw, carrier.open())
    assert isinstance(start, StreamStarted)
    size = start.audio_format.bytes_per_frame()
    frame = bytes(i % 251 for i in range(size))
    wire = gw.audio_message(frame)
    assert wire == gw.send(PlayAudio(frame))[0]
    deliver(carrier, [wire])
    carrier.advance(20)
    assert carrier.take_played() == frame
    for bad in (frame[:-1], b""):
        with pytest.raises(CommandError, match="20 ms"):
            gw.audio_message(bad)
    feed(gw, carrier.stop())
    gw.connection_closed()
    with pytest.raises(CommandError, match="stopped stream"):
        gw.audio_message(frame)
