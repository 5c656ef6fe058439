"""The AgentLink contract, run against the echo agent in-process and over a WebSocket.

All links carry the same agent core (gateway.bridge.echo.EchoCore), so every test here
checks the interface the call engine relies on three times: once with no socket at all,
and once per WebSocket link (picows, aiohttp) through the reference agent server over
loopback.

Audio threshold: at 16 kHz both ways the echo is bit-exact (each echoed utterance must be
a contiguous slice of what was sent); at 24 kHz out, the echo resampled back to 16 kHz
must correlate with the 16 kHz echo at >= 0.95 (normalized, best lag within 5 ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway.bridge import BuiltinLink, WebSocketSettings
from gateway.bridge.echo import EchoCore
from gateway.bridge.link import AgentItem, AgentLink
from gateway.bridge.protocol import (
    BargeIn,
    Dtmf,
    DurationWarning,
    Hangup,
    Mark,
    MarkCleared,
    MarkPlayed,
    Start,
    Stop,
    Transcript,
)
from gateway.errors import AgentError
from loadtest.agent_server import AgentServerConfig, call_records, make_app, wait_for_calls
from rymi_codecs import Resampler
from tests.bridge.conftest import (
    GUARD_S,
    SECRET,
    WS_LINKS,
    call_audio,
    collect,
    has_mark,
    link_maker,
    make_start,
    speech,
    start_server,
    ws_url,
)

SETTINGS = WebSocketSettings(max_queued_frames=10_000)  # tests send faster than real time


@dataclass
class Harness:
    """How to open a link of one kind and read the agent's own account afterwards."""

    make: Callable[[], AgentLink]
    agent_stats: Callable[[AgentLink], Awaitable[dict[str, Any]]]

    async def open(self, start: Start) -> AgentLink:
        link = self.make()
        await link.open(start)
        return link


async def _inprocess_stats(link: AgentLink) -> dict[str, Any]:
    assert isinstance(link, BuiltinLink)
    assert isinstance(link.core, EchoCore)
    return asdict(link.core.stats())


@pytest.fixture(params=["in-process", *WS_LINKS])
async def harness(
    request: pytest.FixtureRequest, http: aiohttp.ClientSession
) -> AsyncIterator[Harness]:
    if request.param == "in-process":
        yield Harness(lambda: BuiltinLink(EchoCore, "echo"), _inprocess_stats)
        return
    app = make_app(AgentServerConfig(secret=SECRET))
    server = await start_server(app)

    async def server_stats(link: AgentLink) -> dict[str, Any]:
        async with asyncio.timeout(GUARD_S):  # the handler records the call once it ends
            await wait_for_calls(app, 1)
        return call_records(app)[-1].core

    make = link_maker(request.param, http)
    yield Harness(lambda: make(ws_url(server), settings=SETTINGS), server_stats)
    await server.close()


async def talk(link: AgentLink, audio: list[bytes]) -> None:
    for frame in audio:
        link.send_audio(frame)
        await asyncio.sleep(0)  # let the link run, as the carrier reader would


async def echo_call(link: AgentLink) -> list[AgentItem]:
    """Send the whole fixture and trailing silence; return what came back up to utt-2."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(talk(link, call_audio()))
        items = await collect(link, has_mark("utt-2"))
    return items


def utterances(items: list[AgentItem]) -> list[bytes]:
    """The audio between consecutive marks."""
    out, current = [], bytearray()
    for item in items:
        if isinstance(item, bytes):
            current += item
        elif isinstance(item, Mark):
            out.append(bytes(current))
            current = bytearray()
    return out


def correlation(a: bytes, b: bytes, max_lag: int = 80) -> float:
    """Best normalized correlation of two PCM16 signals within +-max_lag samples."""
    x = np.frombuffer(a, "<i2").astype(np.float64)
    y = np.frombuffer(b, "<i2").astype(np.float64)
    best = 0.0
    for lag in range(-max_lag, max_lag + 1):
        xs, ys = (x[lag:], y) if lag >= 0 else (x, y[-lag:])
        n = min(len(xs), len(ys))
        num = float(np.dot(xs[:n], ys[:n]))
        den = float(np.sqrt(np.dot(xs[:n], xs[:n]) * np.dot(ys[:n], ys[:n])))
        best = max(best, num / den if den else 0.0)
    return best


async def test_speech_round_trip_is_bit_exact(harness: Harness) -> None:
    link = await harness.open(make_start())
    items = await echo_call(link)
    texts = [i.text for i in items if isinstance(i, Transcript)]
    assert len(texts) == 2
    assert texts[0].startswith("<echo of utterance 1, ")
    sent = speech()
    for n, utterance in enumerate(utterances(items), start=1):
        assert len(utterance) > 16000 * 2  # each phrase is over a second long
        offset = sent.find(utterance)
        assert offset >= 0, f"utterance {n} is not a slice of the input"
        assert offset % 2 == 0
        assert f", {len(utterance) // 32} ms>" in texts[n - 1]
    assert link.stats().dropped_frames == 0
    await link.close(Stop(reason="caller_hangup"))


async def test_24k_agent_audio_correlates_with_the_16k_echo(harness: Harness) -> None:
    reference = EchoCore(make_start())
    expected = utterances([i for f in call_audio() for i in reference.receive_audio(f)])
    link = await harness.open(make_start(agent_rate=24000))
    got = utterances(await echo_call(link))
    await link.close(Stop(reason="caller_hangup"))
    assert len(got) == len(expected) == 2
    for echoed, want in zip(got, expected, strict=True):
        assert abs(len(echoed) * 2 // 3 - len(want)) <= 64  # 24 kHz: 1.5x the bytes
        back = Resampler(24000, 16000)
        assert correlation(back.process(echoed) + back.flush(), want) >= 0.95  # measured 0.986


async def test_marks_are_answered_and_counted(harness: Harness) -> None:
    link = await harness.open(make_start())
    await echo_call(link)
    link.send(MarkPlayed(name="utt-1", heard_ms=2980, position_ms=2980))
    link.send(MarkCleared(name="utt-2", heard_ms=100, position_ms=3080))
    await link.close(Stop(reason="caller_hangup"))
    stats = await harness.agent_stats(link)
    assert (stats["marks_sent"], stats["marks_played"], stats["marks_cleared"]) == (2, 1, 1)
    assert stats["stop_reason"] == "caller_hangup"


async def test_barge_in_stops_the_playback(harness: Harness) -> None:
    # Where the echo starts playing utterance 1, found by running the same core offline.
    reference, audio = EchoCore(make_start()), call_audio()
    first = next(k for k, f in enumerate(audio) if reference.receive_audio(f))
    link = await harness.open(make_start())
    await talk(link, audio[: first + 1])
    head = await collect(link, lambda items: any(isinstance(i, bytes) for i in items))
    link.send(BargeIn(heard_ms=100, discarded_ms=120))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(talk(link, audio[first + 1 :]))
        rest = await collect(link, has_mark("utt-2"))
    await link.close(Stop(reason="caller_hangup"))
    assert isinstance(head[0], Transcript)
    assert [len(i) for i in head[1:] if isinstance(i, bytes)] == [220 * 32]  # lead + 20 ms
    assert len(head) == 2
    assert isinstance(rest[0], Transcript)
    assert "utterance 2" in rest[0].text
    assert [i for i in rest if isinstance(i, Mark)] == [Mark(name="utt-2")]
    assert (await harness.agent_stats(link))["barge_ins"] == 1


async def test_dtmf_transcripts_playback_and_hangup(harness: Harness) -> None:
    link = await harness.open(make_start())
    link.send(Dtmf(digits="12#"))
    link.send(DurationWarning(seconds_left=30))
    link.send(Dtmf(digits="*"))
    items = await collect(link, lambda items: len(items) == 6)
    assert items == [
        Transcript(role="agent", text="<dtmf 1>"),
        Transcript(role="agent", text="<dtmf 2>"),
        Dtmf(digits="12"),
        Transcript(role="agent", text="<dtmf #>"),
        Transcript(role="agent", text="<30 s left>"),
        Hangup(reason="caller_requested"),
    ]
    await link.close(Stop(reason="agent_hangup"))
    assert await link.receive() is None


async def test_close_is_idempotent_and_ends_the_stream(harness: Harness) -> None:
    link = await harness.open(make_start())
    await talk(link, call_audio(0)[:10])
    reader = asyncio.create_task(link.receive())
    await asyncio.sleep(0)
    await link.close(Stop(reason="max_duration"))
    await link.close(Stop(reason="ignored"))
    assert await reader is None
    assert await link.receive() is None
    assert [item async for item in link] == []
    link.send_audio(b"\0" * 640)  # after close: a silent no-op
    link.send(MarkPlayed(name="x", heard_ms=0, position_ms=0))
    stats = await harness.agent_stats(link)
    assert stats["stop_reason"] == "max_duration"
    assert stats["caller_frames"] == 10
    assert link.stats().sent_frames == 10


async def test_misuse_is_refused(harness: Harness) -> None:
    link = harness.make()
    with pytest.raises(AgentError) as info:
        link.send_audio(b"\0\0")
    assert info.value.reason == "not_open"
    with pytest.raises(AgentError):
        await link.receive()
    await link.open(make_start())
    with pytest.raises(TypeError):
        link.send(Stop(reason="caller_hangup"))
    with pytest.raises(AgentError) as info:
        await link.open(make_start())
    assert info.value.reason == "misuse"
    await link.close()
