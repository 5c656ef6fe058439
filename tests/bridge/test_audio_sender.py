"""``AgentLink.audio_sender``: bound once after ``open``, it does what ``send_audio`` does.

PicowsLink hands out its writer's own ``audio`` (no "was it opened" check per frame), so
it must refuse before ``open`` and, once open, deliver frames to a real agent in order,
interleaved with ``send_audio`` and control messages. The aiohttp link keeps the base
class's sender, which is ``send_audio`` itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.bridge import PicowsLink, WebSocketLink
from gateway.bridge.link import AgentLink
from gateway.bridge.protocol import Dtmf, Stop
from gateway.errors import AgentError
from tests.bridge.agents import ScriptedAgent
from tests.bridge.conftest import (
    AGENT_ID,
    GUARD_S,
    SECRET,
    WS_LINKS,
    call_audio,
    link_maker,
    make_start,
    start_server,
    ws_url,
)
from tests.helpers.redis_server import free_port


@pytest.fixture
async def agent() -> AsyncIterator[tuple[ScriptedAgent, TestServer]]:
    """A scripted agent that listens and records, on a real server."""
    scripted = ScriptedAgent()
    server = await start_server(scripted.app())
    yield scripted, server
    await server.close()


async def ended(agent: ScriptedAgent) -> int | None:
    async with asyncio.timeout(GUARD_S):
        await agent.done.wait()
    return agent.close_code


async def opened_sender(
    kind: str, http: aiohttp.ClientSession, server: TestServer
) -> tuple[AgentLink, Callable[[bytes], None]]:
    """A ``kind`` link opened to ``server``, and its audio sender."""
    link = link_maker(kind, http)(ws_url(server))
    await link.open(make_start())
    return link, link.audio_sender()


def unreachable() -> str:
    return f"ws://127.0.0.1:{free_port()}/agents/{AGENT_ID}"


def test_picows_sender_before_open_is_refused_as_not_open() -> None:
    link = PicowsLink(unreachable(), SECRET)
    with pytest.raises(AgentError) as info:
        link.audio_sender()
    assert info.value.reason == "not_open"
    with pytest.raises(AgentError) as direct:
        link.send_audio(bytes(640))
    assert direct.value.reason == "not_open"  # the same refusal as send_audio's


@pytest.mark.parametrize("kind", WS_LINKS)
async def test_sent_frames_reach_the_agent_in_order(
    kind: str, http: aiohttp.ClientSession, agent: tuple[ScriptedAgent, TestServer]
) -> None:
    scripted, server = agent
    link, send = await opened_sender(kind, http, server)
    frames = call_audio(silence_ms=0)[:50]
    # Numbered frames (the speech, with its index in front), mixed with send_audio and a
    # control message (which may overtake queued audio): the audio keeps its order.
    numbered = [i.to_bytes(2, "little") + f[2:] for i, f in enumerate(frames)]
    for i, frame in enumerate(numbered):
        if i % 3 == 0:
            link.send_audio(frame)
        else:
            send(frame)
        if i == 25:
            link.send(Dtmf(digits="5"))
    await link.close(Stop(reason="caller_hangup"))
    await ended(scripted)
    assert scripted.audio == numbered
    assert scripted.messages()[1:] == [Dtmf(digits="5"), Stop(reason="caller_hangup")]


@pytest.mark.parametrize("kind", WS_LINKS)
async def test_sender_after_close_is_a_no_op_like_send_audio(
    kind: str, http: aiohttp.ClientSession, agent: tuple[ScriptedAgent, TestServer]
) -> None:
    scripted, server = agent
    link, send = await opened_sender(kind, http, server)
    send(bytes(640))
    await link.close()
    await ended(scripted)
    send(bytes(640))  # no error, nothing sent: the socket is gone
    link.send_audio(bytes(640))
    assert scripted.audio == [bytes(640)]


async def test_picows_sender_after_a_failed_open_is_a_no_op() -> None:
    link = PicowsLink(unreachable(), SECRET)
    with pytest.raises(AgentError):
        await link.open(make_start())
    send = link.audio_sender()  # opened, though it failed: no not_open refusal
    send(bytes(640))
    link.send_audio(bytes(640))
    assert await link.receive() is None
    await link.close()


async def test_aiohttp_link_sender_is_its_send_audio(http: aiohttp.ClientSession) -> None:
    link = WebSocketLink(http, unreachable(), SECRET)
    assert type(link).audio_sender is AgentLink.audio_sender  # the base class's
    send = link.audio_sender()  # the base hands it out even before open
    assert send == link.send_audio
    with pytest.raises(AgentError) as info:
        send(bytes(640))  # and calling it refuses, as send_audio does
    assert info.value.reason == "not_open"
