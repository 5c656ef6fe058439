"""The tester's media socket (carrier role) against the gateway's own Twilio stream.

The peer is a picows server running :class:`~gateway.carriers.twilio_media.TwilioStream`,
the gateway's adapter, which echoes each caller frame as the agent's audio: what it
parses is what the gateway would, so the frames' identity (sequence numbers, timestamps,
payloads in order), the schedule, the accounting of what came back and each way the
socket ends are checked on real wire messages.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from gateway import carriers
from gateway.carriers.events import (
    AudioReceived,
    ClearPlayback,
    Mark,
    MarkPlayed,
    PlayAudio,
    StreamStopped,
)
from loadtest.audio import carrier_audio, load_fixture
from loadtest.media_socket import play_media, text_audio
from loadtest.player import CallPlan, CallResult, new_call_id

AUDIO = carrier_audio("twilio", load_fixture())
FRAMES = 25  # 0.5 s


@dataclass
class Gateway(WSListener):
    """The gateway's side: echo every frame; ``after`` (frame count) → what to do next."""

    after: dict[int, Action] = field(default_factory=dict)
    stream: carriers.MediaStream = field(
        default_factory=lambda: carriers.get("twilio").open_stream()
    )
    audio: list[AudioReceived] = field(default_factory=list)
    events: list[object] = field(default_factory=list)
    close_code: int | None = None
    transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            return
        for event in self.stream.receive(frame.get_payload_as_utf8_text()):
            self.events.append(event)
            if isinstance(event, AudioReceived):
                self.audio.append(event)
                self.play(PlayAudio(event.payload))
                if action := self.after.get(len(self.audio)):
                    action(self)

    def play(self, command: PlayAudio | Mark | ClearPlayback) -> None:
        assert self.transport is not None
        for message in self.stream.send(command):
            self.transport.send(WSMsgType.TEXT, message)


Action = Callable[[Gateway], None]


class Gateways:
    """A picows server: each connection gets a :class:`Gateway` with the next plan."""

    def __init__(self) -> None:
        self.url = ""
        self.made: list[Gateway] = []
        self._plans: list[dict[int, Action]] = []

    def expect(self, after: dict[int, Action] | None = None) -> None:
        """The next connection's plan: after that many frames, do that."""
        self._plans.append(after or {})

    def route(self, request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener:
        if request.headers.get("X-Refuse"):
            response = WSUpgradeResponse.create_error_response(403, b"refused")
            return WSUpgradeResponseWithListener(response, None)
        self.made.append(Gateway(after=self._plans.pop(0) if self._plans else {}))
        return self.made[-1]


@pytest.fixture
async def gateways() -> AsyncIterator[Gateways]:
    served = Gateways()
    server = await ws_create_server(served.route, "127.0.0.1", 0)
    served.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/media"
    yield served
    server.close()


async def call(
    url: str, frames: int = FRAMES, stopping: Callable[[], bool] = lambda: False
) -> CallResult:
    result = CallResult(CallPlan(0, "twilio", 0.0, frames * 0.02), new_call_id("twilio"))
    result.frame_samples = AUDIO.frame_samples
    side = carriers.get("twilio").simulate_carrier(result.carrier_call_id, {})
    await play_media(url, {}, side, result, AUDIO, keep=1 << 20, stopping=stopping)
    return result


async def test_frames_go_out_in_order_on_the_clock_and_come_back_accounted(
    gateways: Gateways,
) -> None:
    gateways.expect()
    before = time.monotonic()
    result = await call(gateways.url)
    (gw,) = gateways.made
    assert result.completed
    assert result.error is None
    assert result.close_code == gw.close_code == 1000
    assert isinstance(gw.events[-1], StreamStopped)
    # Each frame's identity: its sequence number, timestamp and payload, in order.
    assert [a.sequence for a in gw.audio] == list(range(2, FRAMES + 2))
    assert [a.timestamp_ms for a in gw.audio] == [20 * k for k in range(FRAMES)]
    assert [a.payload for a in gw.audio] == list(AUDIO.frames[:FRAMES])
    # On the absolute 20 ms clock: frame k at k * 20 ms, never drifting.
    assert len(result.sent_at) == len(result.lateness_ms) == FRAMES
    assert result.opened_at is not None
    assert before <= result.opened_at <= result.sent_at[0]
    offsets = [t - result.sent_at[0] - 0.02 * k for k, t in enumerate(result.sent_at)]
    assert all(-0.002 <= o <= 0.015 for o in offsets), offsets
    assert all(0 <= late <= 15 for late in result.lateness_ms)
    # What came back: one echo per frame, 160 samples each, heard as sent (the last echo
    # may come after our close frame: the call is over for the carrier, not accounted).
    got = len(result.received_at)
    assert FRAMES - 1 <= got <= FRAMES
    assert list(result.received_samples) == [160] * got
    assert list(result.received_at) == sorted(result.received_at)
    assert result.received == list(zip(result.received_at, [160] * got, strict=True))
    assert bytes(result.heard) == b"".join(AUDIO.frames[:got])
    assert result.ended_at is not None
    assert result.ended_at >= result.sent_at[-1]


async def test_marks_are_echoed_when_played_and_clears_counted(
    gateways: Gateways,
) -> None:
    gateways.expect(
        {5: lambda gw: gw.play(Mark(name="m1")), 10: lambda gw: gw.play(ClearPlayback())}
    )
    result = await call(gateways.url)
    (gw,) = gateways.made
    assert result.completed
    assert (result.marks, result.clears) == (2, 1)  # m1, and the clear's own mark
    assert MarkPlayed(name="m1") in gw.events


@pytest.mark.parametrize(
    ("hang_up", "code"),
    [
        (lambda gw: gw.transport.send_close(WSCloseCode.INTERNAL_ERROR), 1011),
        (lambda gw: gw.transport.disconnect(graceful=False), 1006),
    ],
    ids=["close-frame", "dropped"],
)
async def test_a_gateway_that_ends_the_call_stops_the_frames(
    gateways: Gateways, hang_up: Action, code: int
) -> None:
    gateways.expect({5: hang_up})
    result = await call(gateways.url)
    assert not result.completed
    assert result.close_code == code
    assert 5 <= len(result.sent_at) <= 7  # the next frame's deadline sees it


async def test_stopping_hangs_up_at_the_next_frame(gateways: Gateways) -> None:
    gateways.expect()
    sent = 0

    def stopping() -> bool:
        nonlocal sent
        sent += 1
        return sent > 3

    result = await call(gateways.url, stopping=stopping)
    (gw,) = gateways.made
    assert not result.completed
    assert len(result.sent_at) == 3
    assert result.close_code == gw.close_code == 1000
    assert isinstance(gw.events[-1], StreamStopped)


async def test_a_message_the_carrier_rejects_ends_the_reading(
    gateways: Gateways,
) -> None:
    def wrong_sid(gw: Gateway) -> None:
        assert gw.transport is not None
        gw.transport.send(
            WSMsgType.TEXT, '{"event":"media","streamSid":"MZother","media":{"payload":""}}'
        )

    gateways.expect({5: wrong_sid})
    result = await call(gateways.url)
    assert not result.completed
    assert len(result.sent_at) <= 7
    # The bad message was accounted (no audio in it), then nothing more was read.
    assert list(result.received_samples) == [160] * 5 + [0]


async def test_a_refused_upgrade_raises(gateways: Gateways) -> None:
    result = CallResult(CallPlan(0, "twilio", 0.0, 0.1), new_call_id("twilio"))
    side = carriers.get("twilio").simulate_carrier(result.carrier_call_id, {})
    with pytest.raises(WSError):
        await play_media(
            gateways.url,
            {"X-Refuse": "1"},
            side,
            result,
            AUDIO,
            keep=0,
            stopping=lambda: False,
        )
    assert result.sent_at.tolist() == []
    assert result.opened_at is None


@pytest.mark.parametrize(
    ("text", "audio", "counts"),
    [
        ('{"event":"media","streamSid":"MZ1","media":{"payload":"AAEC"}}', b"\0\1\2", (0, 0)),
        ('{"event":"playAudio","media":{"contentType":"x","payload":"AAEC"}}', b"\0\1\2", (0, 0)),
        ('{"event":"clear","streamSid":"MZ1"}', None, (1, 0)),
        ('{"event":"clearAudio"}', None, (1, 0)),
        ('{"event":"mark","streamSid":"MZ1","mark":{"name":"m"}}', None, (0, 1)),
        ('{"event":"checkpoint","name":"c"}', None, (0, 1)),
        ('{"event":"media","media":"not an object"}', None, (0, 0)),
        ('{"event":"media","media":{"payload":"AA\\nEC"}}', b"\0\1\2", (0, 0)),  # lenient
        ('{"event":"sendDigits","digits":"1"}', None, (0, 0)),
    ],
)
def test_text_audio_is_the_payload_and_counts_the_rest(
    text: str, audio: bytes | None, counts: tuple[int, int]
) -> None:
    result = CallResult(CallPlan(0, "twilio", 0.0, 0.1), "CA1")
    assert text_audio(text, result) == audio
    assert (result.clears, result.marks) == counts
