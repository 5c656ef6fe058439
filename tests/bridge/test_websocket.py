"""The WebSocket link against real agents that fail: auth, reachability, protocol, stalls.

Close codes are RFC 6455 §7.4.1's; which one goes with which fault is
docs/agent-protocol.md §6.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from gateway.bridge import WebSocketLink, WebSocketSettings
from gateway.bridge.link import LinkFailure
from gateway.bridge.protocol import (
    MAX_AUDIO_BYTES,
    MAX_TEXT_BYTES,
    Error,
    Hangup,
    ProtocolViolation,
    Start,
    Stop,
    Transcript,
    encode_message,
)
from gateway.errors import AgentError, CloseCode
from tests.bridge.agents import Script, ScriptedAgent
from tests.bridge.conftest import (
    AGENT_ID,
    GUARD_S,
    SECRET,
    call_audio,
    make_start,
    start_server,
    ws_url,
)
from tests.helpers.redis_server import free_port

Run = Callable[..., Awaitable[tuple[WebSocketLink, ScriptedAgent]]]


@pytest.fixture
async def scripted(http: aiohttp.ClientSession) -> AsyncIterator[Run]:
    """Start a scripted agent and open a link to it."""
    servers: list[TestServer] = []

    async def run(
        script: Script | None = None,
        *,
        read: bool = True,
        settings: WebSocketSettings | None = None,
    ) -> tuple[WebSocketLink, ScriptedAgent]:
        agent = ScriptedAgent(script, read=read) if script else ScriptedAgent(read=read)
        servers.append(await start_server(agent.app()))
        link = WebSocketLink(http, ws_url(servers[-1]), SECRET, settings=settings)
        await link.open(make_start())
        return link, agent

    yield run
    for server in servers:
        await server.close()


async def drain(link: WebSocketLink) -> None:
    async with asyncio.timeout(GUARD_S):
        while await link.receive() is not None:
            pass


async def failure(link: WebSocketLink) -> AgentError:
    """Receive until the link fails; return the error."""
    with pytest.raises(AgentError) as info:
        await drain(link)
    return info.value


async def ended(agent: ScriptedAgent) -> int | None:
    async with asyncio.timeout(GUARD_S):
        await agent.done.wait()
    return agent.close_code


def sender(*frames: str | bytes) -> Script:
    async def script(ws: web.WebSocketResponse) -> None:
        for frame in frames:
            if isinstance(frame, str):
                await ws.send_str(frame)
            else:
                await ws.send_bytes(frame)

    return script


# -- opening ---------------------------------------------------------------------------


async def test_open_sends_start_first_with_a_valid_token(scripted: Run) -> None:
    link, agent = await scripted()
    await link.close(Stop(reason="caller_hangup"))
    assert await ended(agent) == CloseCode.NORMAL
    assert agent.messages() == [make_start(), Stop(reason="caller_hangup")]


@pytest.mark.parametrize(
    ("secret", "agent_id"),
    [(b"another-secret-of-at-least-32-bytes!!", AGENT_ID), (SECRET, "someone-else")],
)
async def test_a_refused_token_is_unauthorized(
    http: aiohttp.ClientSession, echo_server: TestServer, secret: bytes, agent_id: str
) -> None:
    link = WebSocketLink(http, ws_url(echo_server, agent_id), secret)
    with pytest.raises(AgentError) as info:
        await link.open(make_start())  # the token's audience is start.agent_id
    assert info.value.reason == ProtocolViolation.UNAUTHORIZED
    await link.close()  # after a failed open: harmless


async def test_a_handshake_refused_otherwise_is_refused(
    http: aiohttp.ClientSession, echo_server: TestServer
) -> None:
    url = str(echo_server.make_url("/no/such/route").with_scheme("ws"))
    with pytest.raises(AgentError) as info:
        await WebSocketLink(http, url, SECRET).open(make_start())
    assert info.value.reason == LinkFailure.REFUSED
    assert "404" in str(info.value)


async def test_an_unreachable_agent_fails_at_once(http: aiohttp.ClientSession) -> None:
    link = WebSocketLink(http, f"ws://127.0.0.1:{free_port()}/agents/{AGENT_ID}", SECRET)
    with pytest.raises(AgentError) as info:
        await link.open(make_start())
    assert info.value.reason == LinkFailure.UNREACHABLE
    assert SECRET.decode() not in str(info.value)


async def test_an_agent_that_never_answers_times_out(http: aiohttp.ClientSession) -> None:
    silent: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # accept the connection, never answer the handshake

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = WebSocketSettings(connect_timeout_s=0.2)
    link = WebSocketLink(http, f"ws://127.0.0.1:{port}/agents/a", SECRET, settings=settings)
    async with server:
        with pytest.raises(AgentError) as info:
            await link.open(make_start())
        for writer in silent:
            writer.close()
    assert info.value.reason == LinkFailure.TIMEOUT


# -- the agent's side of the call ------------------------------------------------------


async def test_an_agent_closing_mid_call_is_an_agent_failure(scripted: Run) -> None:
    async def close(ws: web.WebSocketResponse) -> None:
        await ws.close()

    link, _ = await scripted(close)
    assert (await failure(link)).reason == LinkFailure.CLOSED
    assert await link.receive() is None  # reported once
    await link.send_audio(b"\0" * 640)  # then sending is a no-op
    await link.close(Stop(reason="agent_error"))


async def test_hangup_then_close_is_a_normal_end(scripted: Run) -> None:
    async def hang_up(ws: web.WebSocketResponse) -> None:
        await ws.send_str(encode_message(Transcript(role="agent", text="bye")))
        await ws.send_str(encode_message(Hangup(reason="done")))
        await ws.close()

    link, _ = await scripted(hang_up)
    assert [item async for item in link] == [
        Transcript(role="agent", text="bye"),
        Hangup(reason="done"),
    ]
    await link.close(Stop(reason="agent_hangup"))


async def test_malformed_messages_are_answered_and_skipped(scripted: Run) -> None:
    script = sender(
        "not json",
        '{"type":"mark"}',  # a known type without its field
        b"\x01\x02\x03",  # odd length: not whole samples
        bytes(MAX_AUDIO_BYTES + 2),  # over the audio limit, but readable
        '{"type":"set_voice_activity","threshold":0.6}',  # unknown, not required
        encode_message(Transcript(role="caller", text="still here")),
    )
    link, agent = await scripted(script)
    assert await link.receive() == Transcript(role="caller", text="still here")
    await link.close(Stop(reason="caller_hangup"))
    assert await ended(agent) == CloseCode.NORMAL
    errors = [m.code for m in agent.messages() if isinstance(m, Error)]
    assert errors == ["malformed", "malformed", "invalid_audio", "too_large"]
    stats = link.stats()
    assert (stats.invalid_messages, stats.unknown_messages, stats.received_messages) == (4, 1, 1)


@pytest.mark.parametrize(
    ("frame", "reason", "code"),
    [
        ("x" * (MAX_TEXT_BYTES + 1), ProtocolViolation.TOO_LARGE, CloseCode.MESSAGE_TOO_BIG),
        ('{"type":"x","required":true}', ProtocolViolation.UNSUPPORTED, CloseCode.POLICY_VIOLATION),
        (bytes(2 * MAX_AUDIO_BYTES + 2), ProtocolViolation.TOO_LARGE, CloseCode.MESSAGE_TOO_BIG),
    ],
    ids=["text-over-16k", "unknown-required", "binary-over-transport-cap"],
)
async def test_fatal_violations_close_with_the_documented_code(
    scripted: Run, frame: str | bytes, reason: str, code: int
) -> None:
    link, agent = await scripted(sender(frame))
    assert (await failure(link)).reason == reason
    assert await ended(agent) == code
    await link.close(Stop(reason="agent_error"))


async def test_invalid_utf8_text_fails_the_connection_with_1007(scripted: Run) -> None:
    async def invalid_text(ws: web.WebSocketResponse) -> None:
        await ws.send_frame(b'{"type":"clear"\xff}', WSMsgType.TEXT)

    link, agent = await scripted(invalid_text)
    assert (await failure(link)).reason == ProtocolViolation.MALFORMED
    assert await ended(agent) == CloseCode.INVALID_PAYLOAD  # RFC 6455 §8.1
    await link.close(Stop(reason="agent_error"))


async def test_close_flushes_queued_caller_audio_before_stop(scripted: Run) -> None:
    link, agent = await scripted()
    audio = call_audio(0)[:100]  # the default queue holds 100 frames (2 s)
    for frame in audio:  # queued without yielding: nothing is sent yet
        await link.send_audio(frame)
    await link.close(Stop(reason="caller_hangup"))
    await ended(agent)
    assert agent.audio == audio  # a caller hanging up mid-sentence loses nothing
    assert agent.messages()[-1] == Stop(reason="caller_hangup")


async def test_a_stalled_agent_loses_the_oldest_audio_not_memory(scripted: Run) -> None:
    settings = WebSocketSettings(max_queued_frames=50, flush_timeout_s=0.1, close_timeout_s=0.5)
    link, agent = await scripted(read=False, settings=settings)
    chunk, sent = bytes(32_000), 0  # 1 s chunks fill the socket buffers sooner
    async with asyncio.timeout(GUARD_S):
        while link.stats().dropped_frames == 0:
            await link.send_audio(chunk)
            sent += 1
            await asyncio.sleep(0)
    for _ in range(20):
        await link.send_audio(chunk)
    stats = link.stats()
    assert stats.queued_frames == 50
    assert stats.dropped_frames == 21
    in_flight = sent + 20 - (stats.sent_frames + 50 + 21)
    assert in_flight in (0, 1)  # the writer may be blocked inside one send
    await link.close(Stop(reason="caller_hangup"))  # returns though the agent never reads
    agent.release.set()
    await ended(agent)
    assert Stop(reason="caller_hangup") not in agent.messages()  # it could not be delivered


async def test_start_is_sent_exactly_once(scripted: Run) -> None:
    link, agent = await scripted()
    await link.close(Stop(reason="drain"))
    await link.close(Stop(reason="drain"))
    await ended(agent)
    assert [type(m) for m in agent.messages()] == [Start, Stop]


async def test_what_a_stall_drops_is_the_oldest_queued_run(scripted: Run) -> None:
    settings = WebSocketSettings(max_queued_frames=50, flush_timeout_s=GUARD_S)
    link, agent = await scripted(read=False, settings=settings)
    total = 0
    async with asyncio.timeout(GUARD_S):
        while link.stats().dropped_frames < 30:
            await link.send_audio(total.to_bytes(4, "little") + bytes(31_996))
            total += 1
            await asyncio.sleep(0)
    agent.release.set()  # the agent reads again: the backlog drains, nothing else is lost
    await link.close(Stop(reason="caller_hangup"))
    await ended(agent)
    seqs = [int.from_bytes(chunk[:4], "little") for chunk in agent.audio]
    missing = sorted(set(range(total)) - set(seqs))
    assert seqs == sorted(seqs)
    assert len(missing) == link.stats().dropped_frames == 30
    assert missing == list(range(missing[0], missing[0] + 30))  # one run, oldest first
    assert seqs[-50:] == list(range(total - 50, total))  # the newest were all kept
    assert agent.messages()[-1] == Stop(reason="caller_hangup")
