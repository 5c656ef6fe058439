"""The WebSocket links against real agents that fail: auth, reachability, protocol, stalls.

Every test runs once per link (picows and aiohttp, the ``ws_link`` fixture). Close codes
are RFC 6455 §7.4.1's; which one goes with which fault is docs/agent-protocol.md §6.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from gateway.bridge import WebSocketSettings
from gateway.bridge.link import AgentLink, LinkFailure
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
from tests.bridge.agents import RawAgent, Script, ScriptedAgent, raw_frame
from tests.bridge.conftest import (
    AGENT_ID,
    GUARD_S,
    SECRET,
    LinkMaker,
    Run,
    call_audio,
    make_start,
    ws_url,
)
from tests.helpers.redis_server import free_port


async def drain(link: AgentLink) -> None:
    async with asyncio.timeout(GUARD_S):
        while await link.receive() is not None:
            pass


async def failure(link: AgentLink) -> AgentError:
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
    ws_link: LinkMaker, echo_server: TestServer, secret: bytes, agent_id: str
) -> None:
    link = ws_link(ws_url(echo_server, agent_id), secret)
    with pytest.raises(AgentError) as info:
        await link.open(make_start())  # the token's audience is start.agent_id
    assert info.value.reason == ProtocolViolation.UNAUTHORIZED
    assert await link.receive() is None  # a link that failed to open has ended
    link.send_audio(bytes(640))  # a no-op
    await link.close()  # after a failed open: harmless


async def test_a_handshake_refused_otherwise_is_refused(
    ws_link: LinkMaker, echo_server: TestServer
) -> None:
    url = str(echo_server.make_url("/no/such/route").with_scheme("ws"))
    with pytest.raises(AgentError) as info:
        await ws_link(url).open(make_start())
    assert info.value.reason == LinkFailure.REFUSED
    assert "404" in str(info.value)


async def test_an_unreachable_agent_fails_at_once(ws_link: LinkMaker) -> None:
    link = ws_link(f"ws://127.0.0.1:{free_port()}/agents/{AGENT_ID}")
    with pytest.raises(AgentError) as info:
        await link.open(make_start())
    assert info.value.reason == LinkFailure.UNREACHABLE
    assert SECRET.decode() not in str(info.value)


async def test_an_agent_that_never_answers_times_out(ws_link: LinkMaker) -> None:
    silent: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append((reader, writer))  # accept the connection, never answer the handshake

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = WebSocketSettings(connect_timeout_s=0.2)
    link = ws_link(f"ws://127.0.0.1:{port}/agents/a", settings=settings)
    async with server:
        with pytest.raises(AgentError) as info:
            await link.open(make_start())
        for reader, writer in silent:
            async with asyncio.timeout(GUARD_S):  # the link hangs up its half-open socket
                assert (await reader.read()).startswith(b"GET /agents/a HTTP/1.1")
            writer.close()
    assert info.value.reason == LinkFailure.TIMEOUT


# -- the agent's side of the call ------------------------------------------------------


@pytest.mark.parametrize("code", [CloseCode.NORMAL, CloseCode.MESSAGE_TOO_BIG])
async def test_an_agent_closing_mid_call_is_an_agent_failure(scripted: Run, code: int) -> None:
    async def close(ws: web.WebSocketResponse) -> None:
        await ws.close(code=code)

    link, agent = await scripted(close)
    error = await failure(link)
    assert error.reason == LinkFailure.CLOSED  # whatever code the agent gives
    assert f"code {code}" in str(error)
    await ended(agent)
    assert await link.receive() is None  # reported once
    link.send_audio(b"\0" * 640)  # then sending is a no-op
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


async def test_fragmented_messages_are_reassembled(scripted: Run) -> None:
    pcm = bytes(range(256)) * 2
    raw = (
        raw_frame(0x2, pcm[:300], fin=False)
        + raw_frame(0x9, b"are you there")  # a ping may come between fragments (§5.4)
        + raw_frame(0x0, pcm[300:])
        + raw_frame(0x1, b'{"type":"transcript",', fin=False)
        + raw_frame(0x0, b'"role":"agent",', fin=False)
        + raw_frame(0x0, b'"text":"hi"}')
    )
    link, agent = await scripted(agent=RawAgent(raw))
    async with asyncio.timeout(GUARD_S):
        assert await link.receive() == pcm
        assert await link.receive() == Transcript(role="agent", text="hi")
    await link.close(Stop(reason="caller_hangup"))
    assert await ended(agent) == CloseCode.NORMAL


@pytest.mark.parametrize(
    ("raw", "reason", "code"),
    [
        (raw_frame(0x0, b"\0\0"), ProtocolViolation.MALFORMED, CloseCode.PROTOCOL_ERROR),
        (
            raw_frame(0x2, b"\0\0", fin=False) + raw_frame(0x2, b"\0\0"),
            ProtocolViolation.MALFORMED,
            CloseCode.PROTOCOL_ERROR,
        ),
        (
            bytes([0x80 | 0x40 | 0x2, 2, 0, 0]),
            ProtocolViolation.MALFORMED,
            CloseCode.PROTOCOL_ERROR,
        ),
        (
            raw_frame(0x2, bytes(600), fin=False) + raw_frame(0x0, bytes(600)),
            ProtocolViolation.TOO_LARGE,
            CloseCode.MESSAGE_TOO_BIG,
        ),
    ],
    ids=["continuation-of-nothing", "message-inside-a-message", "rsv1-set", "fragments-over-cap"],
)
async def test_broken_framing_fails_the_connection(
    scripted: Run, raw: bytes, reason: str, code: int
) -> None:
    settings = WebSocketSettings(max_message_bytes=1000)
    link, agent = await scripted(agent=RawAgent(raw), settings=settings)
    assert (await failure(link)).reason == reason
    assert await ended(agent) == code
    await link.close(Stop(reason="agent_error"))


async def test_an_agent_that_stops_answering_pings_fails_the_link(scripted: Run) -> None:
    settings = WebSocketSettings(heartbeat_s=0.2)
    link, agent = await scripted(read=False, settings=settings)  # no reading, no pongs
    assert (await failure(link)).reason == LinkFailure.CLOSED
    await link.close(Stop(reason="agent_error"))
    agent.release.set()
    await ended(agent)


async def test_close_flushes_queued_caller_audio_before_stop(scripted: Run) -> None:
    link, agent = await scripted()
    audio = call_audio(0)[:100]  # the default queue holds 100 frames (2 s)
    for frame in audio:  # without yielding: written at once (picows) or queued (aiohttp)
        link.send_audio(frame)
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
            link.send_audio(chunk)
            sent += 1
            await asyncio.sleep(0)
    for _ in range(20):
        link.send_audio(chunk)
    stats = link.stats()
    assert stats.queued_frames == 50
    assert stats.dropped_frames == 21
    in_flight = sent + 20 - (stats.sent_frames + 50 + 21)
    assert in_flight in (0, 1)  # aiohttp's writer may be blocked inside one send
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
            link.send_audio(total.to_bytes(4, "little") + bytes(31_996))
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
