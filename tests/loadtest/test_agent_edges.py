"""The agent server's two edges behave alike: picows (the process) and aiohttp (in-process).

Each test runs on both (the ``serve_agent`` fixture): the gateway's own links make
calls; raw clients check the upgrade's refusals, the ``start`` policy, malformed and
fragmented messages, frames that break RFC 6455, and the shutdown.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from gateway.bridge.protocol import (
    Error,
    Mark,
    Stop,
    Transcript,
    decode_agent_message,
    encode_message,
)
from gateway.errors import CloseCode
from loadtest.agent_server import AgentServerConfig
from tests.bridge.conftest import (
    FIXTURE,
    GUARD_S,
    SECRET,
    WS_LINKS,
    call_audio,
    collect,
    has_mark,
    link_maker,
    make_start,
)
from tests.loadtest.conftest import ServeAgent, bearer


@pytest.mark.parametrize("kind", WS_LINKS)
async def test_the_gateway_links_talk_to_a_pattern_agent(
    serve_agent: ServeAgent, http: aiohttp.ClientSession, kind: str
) -> None:
    config = AgentServerConfig(secret=SECRET, mode="pattern", talk_ms=200, fixture=FIXTURE)
    served = await serve_agent(config)
    link = link_maker(kind, http)(served.ws_url())
    await link.open(make_start())
    for frame in call_audio(0)[:10]:
        link.send_audio(frame)
    items = await collect(link, has_mark("talk-1"))
    await link.close(Stop(reason="caller_hangup"))
    await asyncio.wait_for(served.wait_for_calls(1), GUARD_S)
    assert items[0] == Transcript(role="agent", text="<talk 1>")
    assert items[-1] == Mark(name="talk-1")
    assert [len(i) for i in items if isinstance(i, bytes)] == [640] * 10
    (record,) = served.records()
    assert (record.frames_in, record.frames_out, record.bytes_out) == (10, 10, 6400)
    assert (record.messages_in, record.messages_out) == (1, 2)
    assert (record.stop_reason, record.close_code) == ("caller_hangup", CloseCode.NORMAL)
    assert record.core["marks_sent"] == 1


async def test_an_invalid_token_gets_401_and_other_paths_404(
    serve_agent: ServeAgent, http: aiohttp.ClientSession
) -> None:
    served = await serve_agent(AgentServerConfig(secret=SECRET))
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer x.y.z"}):
        async with http.get(served.ws_url(), headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    async with http.get(served.ws_url(agent_id="another-agent"), headers=bearer()) as response:
        assert response.status == 401  # the token's audience is another agent
    async with http.get(f"{served.base}/elsewhere") as response:
        assert response.status == 404


@pytest.mark.parametrize(
    "first",
    [
        encode_message(make_start(call_id="another-call")),
        encode_message(make_start()).replace("rymi-agent/1", "rymi-agent/2"),
        '{"type":"stop","reason":"caller_hangup"}',
        b"\x00" * 640,
        None,  # nothing within the start timeout
    ],
    ids=["wrong-call", "unknown-major-version", "not-start", "audio-first", "silence"],
)
async def test_anything_but_start_first_is_a_policy_violation(
    serve_agent: ServeAgent, http: aiohttp.ClientSession, first: str | bytes | None
) -> None:
    config = AgentServerConfig(secret=SECRET, start_timeout_s=0.2)
    served = await serve_agent(config)
    async with http.ws_connect(served.ws_url(), headers=bearer()) as ws:
        if isinstance(first, str):
            await ws.send_str(first)
        elif first is not None:
            await ws.send_bytes(first)
        msg = await ws.receive(timeout=GUARD_S)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == CloseCode.POLICY_VIOLATION
    await asyncio.sleep(0.05)
    assert served.records() == []  # not a call


async def test_malformed_messages_are_answered_and_counted(
    serve_agent: ServeAgent, http: aiohttp.ClientSession
) -> None:
    served = await serve_agent(AgentServerConfig(secret=SECRET, mode="probe"))
    async with http.ws_connect(served.ws_url(), headers=bearer()) as ws:
        await ws.send_str(encode_message(make_start()))
        await ws.send_str('{"type":"mark_played"}')
        reply = decode_agent_message(await ws.receive_str(timeout=GUARD_S))
        assert isinstance(reply, Error)
        assert reply.code == "malformed"
        await ws.send_str('{"type":"from_the_future"}')  # unknown: skipped
        await ws.send_bytes(bytes(640))
        assert await ws.receive_bytes(timeout=GUARD_S) == bytes(640)
    await asyncio.wait_for(served.wait_for_calls(1), GUARD_S)
    (record,) = served.records()
    assert (record.errors_in, record.messages_in, record.frames_in) == (1, 0, 1)


async def test_shutdown_closes_live_calls_with_1001_and_records_them(
    serve_agent: ServeAgent, http: aiohttp.ClientSession
) -> None:
    config = AgentServerConfig(secret=SECRET, mode="probe")
    served = await serve_agent(config)
    async with http.ws_connect(served.ws_url(), headers=bearer()) as ws:
        await ws.send_str(encode_message(make_start()))
        await ws.send_bytes(bytes(640))
        assert await ws.receive_bytes(timeout=GUARD_S) == bytes(640)
        closing = asyncio.ensure_future(served.close())
        msg = await ws.receive(timeout=GUARD_S)  # aiohttp answers the close with 1000
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, CloseCode.GOING_AWAY)
        await asyncio.wait_for(closing, GUARD_S)
    (record,) = served.records()
    assert (record.frames_in, record.stop_reason, record.close_code) == (1, None, 1000)


class _Client(WSListener):
    """A raw client: frames as sent, the frames and close code that come back."""

    def __init__(self) -> None:
        self.frames: list[tuple[WSMsgType, bytes]] = []
        self.close_code: int | None = None
        self.done = asyncio.Event()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        else:
            self.frames.append((frame.msg_type, frame.get_payload_as_bytes()))
        self.done.set()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.done.set()


async def _raw(url: str) -> tuple[WSTransport, _Client]:
    transport, client = await ws_connect(_Client, url, extra_headers=bearer())
    assert isinstance(client, _Client)
    return transport, client


async def _next(client: _Client) -> None:
    await asyncio.wait_for(client.done.wait(), GUARD_S)
    client.done.clear()


async def test_fragmented_messages_are_reassembled(serve_agent: ServeAgent) -> None:
    served = await serve_agent(AgentServerConfig(secret=SECRET, mode="probe"))
    transport, client = await _raw(served.ws_url())
    start = encode_message(make_start()).encode()
    transport.send(WSMsgType.TEXT, start[:10], fin=False)
    transport.send(WSMsgType.CONTINUATION, start[10:], fin=True)
    audio = bytes(range(256)) * 2 + bytes(128)
    transport.send(WSMsgType.BINARY, audio[:100], fin=False)
    transport.send(WSMsgType.CONTINUATION, audio[100:300], fin=False)
    transport.send(WSMsgType.CONTINUATION, audio[300:], fin=True)
    await _next(client)
    assert client.frames == [(WSMsgType.BINARY, audio)]
    transport.send_close(WSCloseCode.OK)
    await asyncio.wait_for(transport.wait_disconnected(), GUARD_S)
    await asyncio.wait_for(served.wait_for_calls(1), GUARD_S)
    assert served.records()[0].frames_in == 1


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"msg_type": WSMsgType.BINARY, "message": bytes(640), "rsv1": True}, 1002),
        ({"msg_type": WSMsgType.TEXT, "message": b'{"type":"\xff"}'}, 1007),
        ({"msg_type": WSMsgType.CONTINUATION, "message": bytes(640)}, 1002),
    ],
    ids=["rsv-bits", "invalid-utf8", "stray-continuation"],
)
async def test_frames_that_break_rfc6455_fail_the_connection(
    serve_agent: ServeAgent, frame: dict[str, object], code: int
) -> None:
    served = await serve_agent(AgentServerConfig(secret=SECRET, mode="probe"))
    transport, client = await _raw(served.ws_url())
    transport.send(WSMsgType.TEXT, encode_message(make_start()))
    transport.send(**frame)  # type: ignore[arg-type]
    await asyncio.wait_for(transport.wait_disconnected(), GUARD_S)
    assert client.close_code == code
    assert client.frames == []
