"""How agent items reach the engine (audio sink, order, back-pressure) and how caller
audio leaves (written at once, or queued behind a stall), on real links.

The ordering rule of the AgentLink contract: audio goes to the sink unless a control
message read before it still waits for ``receive()``; then it waits behind it. The
picows and built-in links read ahead of ``receive()``, so the rule shows; the aiohttp
link reads inside ``receive()``, so for it only the overall order is checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from gateway.bridge import BuiltinLink, WebSocketSettings
from gateway.bridge.link import AgentItem, AgentLink
from gateway.bridge.protocol import (
    GatewayMessage,
    Mark,
    MarkPlayed,
    Start,
    Stop,
    Transcript,
    decode_gateway_message,
    encode_message,
)
from loadtest.agent_pattern import ProbeCore
from tests.bridge.agents import FloodingAgent, ScriptedAgent
from tests.bridge.conftest import (
    GUARD_S,
    Run,
    link_maker,
    make_start,
    start_server,
    ws_url,
)

A = [bytes([n]) * 640 for n in range(1, 6)]  # five distinct 20 ms frames
T1, T2 = Transcript(role="agent", text="one"), Transcript(role="agent", text="two")
M1 = Mark(name="m1")
BURST: list[AgentItem] = [A[0], T1, A[1], A[2], M1, A[3]]  # what the agent says first...
LATER: list[AgentItem] = [A[4], T2]  # ...and after the next caller frame


class BurstCore:
    """A built-in agent that says :data:`BURST`, then :data:`LATER`, one per caller frame."""

    def __init__(self, start: Start) -> None:
        self._answers = [BURST, LATER]

    def receive_audio(self, pcm: bytes) -> list[AgentItem]:
        return self._answers.pop(0) if self._answers else []

    def receive_message(self, message: GatewayMessage) -> list[AgentItem]:
        return []


async def say(ws: web.WebSocketResponse, items: list[AgentItem]) -> None:
    for item in items:
        if isinstance(item, bytes):
            await ws.send_bytes(item)
        else:
            await ws.send_str(encode_message(item))


async def burst_script(ws: web.WebSocketResponse) -> None:
    """The scripted agent's BurstCore: each answer after a caller frame."""
    for answer in (BURST, LATER):
        await ws.receive()
        await say(ws, answer)


@pytest.fixture(params=["picows", "in-process"])
async def read_ahead(
    request: pytest.FixtureRequest, http: aiohttp.ClientSession
) -> AsyncIterator[AgentLink]:
    """An open link that reads ahead of receive(), to an agent that answers with bursts."""
    if request.param == "in-process":
        link: AgentLink = BuiltinLink(BurstCore, "burst")
        await link.open(make_start())
        yield link
        return
    server = await start_server(ScriptedAgent(burst_script).app())
    link = link_maker("picows", http)(ws_url(server))
    await link.open(make_start())
    yield link
    await link.close()
    await server.close()


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition()`` holds (guarded; never a speed assertion)."""
    async with asyncio.timeout(GUARD_S):
        while not condition():  # noqa: ASYNC110 (a counter to watch, no event to wait on)
            await asyncio.sleep(0.001)


def has_read(link: AgentLink, frames: int, messages: int) -> Callable[[], bool]:
    return lambda: (
        (link.stats().received_frames, link.stats().received_messages)
        == (
            frames,
            messages,
        )
    )


# -- the audio sink ------------------------------------------------------------------------


async def test_audio_goes_to_the_sink_unless_a_message_waits_before_it(
    read_ahead: AgentLink,
) -> None:
    link, sunk = read_ahead, list[bytes]()
    link.set_audio_sink(sunk.append)
    link.send_audio(bytes(640))
    await until(has_read(link, 4, 2))  # the whole burst is in, nobody has called receive()
    assert sunk == [A[0]]  # at once, before any receive(): nothing was pending
    got = [await link.receive() for _ in range(5)]
    assert got == [T1, A[1], A[2], M1, A[3]]  # behind T1, in the agent's order
    link.send_audio(bytes(640))
    assert await link.receive() == T2
    assert sunk == [A[0], A[4]]  # nothing pending again: straight to the sink
    link.set_audio_sink(None)
    await link.close(Stop(reason="caller_hangup"))


async def test_sink_and_receive_together_keep_the_agents_order(scripted: Run) -> None:
    link, _ = await scripted(burst_script)
    timeline: list[AgentItem] = []
    link.set_audio_sink(timeline.append)
    link.send_audio(bytes(640))
    link.send_audio(bytes(640))
    async with asyncio.timeout(GUARD_S):
        while T2 not in timeline:  # the engine's reader task, in effect
            item = await link.receive()
            assert item is not None
            timeline.append(item)
    assert timeline == BURST + LATER
    await link.close(Stop(reason="caller_hangup"))


async def test_a_sink_that_raises_fails_the_link_with_1011(scripted: Run) -> None:
    async def one_frame(ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(A[0])

    def broken(pcm: bytes) -> None:
        raise ZeroDivisionError("engine bug")

    link, agent = await scripted(one_frame)
    link.set_audio_sink(broken)
    with pytest.raises(ZeroDivisionError):
        async with asyncio.timeout(GUARD_S):
            await link.receive()  # the engine's own bug comes back to it, unchanged
    async with asyncio.timeout(GUARD_S):
        await agent.done.wait()
    assert agent.close_code == 1011
    link.send_audio(bytes(640))  # the link has ended: a no-op
    await link.close(Stop(reason="agent_error"))


# -- back-pressure -------------------------------------------------------------------------


async def test_a_paused_link_lets_a_flooding_agent_fill_its_tcp_window(scripted: Run) -> None:
    agent = FloodingAgent()
    link, _ = await scripted(agent=agent)
    link.pause_reading()
    link.pause_reading()  # idempotent
    sunk: list[bytes] = []
    link.set_audio_sink(sunk.append)
    reader = asyncio.create_task(link.receive())
    async with asyncio.timeout(GUARD_S):
        await agent.stalled.wait()  # the agent's socket takes no more
    await asyncio.sleep(0.05)  # time for a link that still read to drain the agent
    assert agent.transport().get_write_buffer_size() > 0  # the TCP window stays full
    assert not agent.finished.is_set()
    assert sunk == []
    assert not reader.done()  # nothing delivered while paused
    link.resume_reading()
    link.resume_reading()
    async with asyncio.timeout(GUARD_S):
        assert await reader == Transcript(role="agent", text="done")
    assert [int.from_bytes(pcm[:4], "little") for pcm in sunk] == list(range(agent.sent))
    assert agent.sent > agent.extra  # the window took some before the stall
    await link.close(Stop(reason="caller_hangup"))


async def test_a_paused_builtin_holds_the_cores_output() -> None:
    link = BuiltinLink(ProbeCore, "probe")
    await link.open(make_start())
    sunk: list[bytes] = []
    link.set_audio_sink(sunk.append)
    link.send_audio(A[0])
    assert sunk == [A[0]]  # synchronously, inside send_audio
    link.pause_reading()
    link.send_audio(A[1])
    link.send_audio(A[2])
    reader = asyncio.create_task(link.receive())
    await asyncio.sleep(0)
    assert sunk == [A[0]]
    assert not reader.done()
    link.resume_reading()
    assert sunk == A[:3]
    await link.close(Stop(reason="caller_hangup"))
    assert await reader is None  # close ends a pending receive()


# -- caller audio out ----------------------------------------------------------------------


async def test_picows_writes_caller_audio_at_once_on_an_idle_socket(
    http: aiohttp.ClientSession,
) -> None:
    agent = ScriptedAgent()
    server = await start_server(agent.app())
    link = link_maker("picows", http)(ws_url(server))
    await link.open(make_start())
    audio = [n.to_bytes(4, "little") + bytes(636) for n in range(50)]
    for frame in audio:
        link.send_audio(frame)
        stats = link.stats()
        assert (stats.queued_frames, stats.dropped_frames) == (0, 0)  # no queue, no task
    assert link.stats().sent_frames == 50  # all handed to the socket before any await
    await link.close(Stop(reason="caller_hangup"))
    async with asyncio.timeout(GUARD_S):
        await agent.done.wait()
    await server.close()
    assert agent.audio == audio
    assert agent.messages()[-1] == Stop(reason="caller_hangup")


async def test_control_overtakes_audio_queued_behind_a_stalled_agent(scripted: Run) -> None:
    settings = WebSocketSettings(max_queued_frames=50, flush_timeout_s=GUARD_S)
    link, agent = await scripted(read=False, settings=settings)
    sent = 0
    async with asyncio.timeout(GUARD_S):
        while link.stats().queued_frames < 10:  # the socket is full: audio queues now
            link.send_audio(sent.to_bytes(4, "little") + bytes(31_996))
            sent += 1
            await asyncio.sleep(0)
    link.send(MarkPlayed(name="m1", heard_ms=20, position_ms=20))
    agent.release.set()  # the agent reads again
    await link.close(Stop(reason="caller_hangup"))
    async with asyncio.timeout(GUARD_S):
        await agent.done.wait()
    mark = next(
        i
        for i, item in enumerate(agent.received)
        if isinstance(item, str) and isinstance(decode_gateway_message(item), MarkPlayed)
    )
    seqs = [int.from_bytes(x[:4], "little") for x in agent.received if isinstance(x, bytes)]
    after = [int.from_bytes(x[:4], "little") for x in agent.received[mark:] if isinstance(x, bytes)]
    assert seqs == list(range(sent))  # nothing lost, nothing reordered among the audio
    assert len(after) >= 10  # the queued audio, sent before the mark, arrived after it
    assert link.stats().dropped_frames == 0
