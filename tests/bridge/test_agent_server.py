"""The reference agent server: the pattern agent, its policy checks, stats, and a process.

The echo mode's behaviour is the shared contract of test_link_contract.py; here is what
is specific to the server: authentication, the ``start`` policy (1008, RFC 6455
§7.4.1), per-call records, the talk/listen agent, and a real subprocess stopped by
SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.bridge.link import LinkFailure
from gateway.bridge.protocol import (
    BargeIn,
    Error,
    Hangup,
    Mark,
    Stop,
    Transcript,
    decode_agent_message,
    encode_message,
    issue_agent_token,
)
from gateway.errors import AgentError, CloseCode
from loadtest.agent_pattern import PatternCore, tone
from loadtest.agent_server import AgentServerConfig, call_records, make_app
from tests.bridge.conftest import (
    AGENT_ID,
    FIXTURE,
    GUARD_S,
    SECRET,
    LinkMaker,
    call_audio,
    collect,
    has_mark,
    make_start,
    start_server,
    ws_url,
)

ROOT = Path(__file__).resolve().parents[2]
FRAME = bytes(640)


def pattern(**kwargs: int) -> PatternCore:
    return PatternCore(make_start(), tone(16000, 400), talk_ms=100, listen_ms=60, **kwargs)


class TestPatternCore:
    def test_talks_then_listens_in_turn(self) -> None:
        core = pattern()
        answers = [core.receive_audio(FRAME) for _ in range(9)]
        assert answers[0][0] == Transcript(role="agent", text="<talk 1>")
        assert [sum(len(i) for i in a if isinstance(i, bytes)) for a in answers] == [
            640, 640, 640, 640, 640, 0, 0, 0, 640,
        ]  # fmt: skip
        assert answers[4][-1] == Mark(name="talk-1")
        assert answers[8][0] == Transcript(role="agent", text="<talk 2>")

    def test_the_source_loops_seamlessly(self) -> None:
        source = tone(16000, 400)[: 30 * 32]  # 30 ms: every other frame wraps
        core = PatternCore(make_start(), source, talk_ms=200, listen_ms=0)
        out = b"".join(
            i for _ in range(6) for i in core.receive_audio(FRAME) if isinstance(i, bytes)
        )
        assert out == (source * 4)[: len(out)]

    def test_barge_in_cuts_the_spurt(self) -> None:
        core = pattern()
        core.receive_audio(FRAME)
        assert core.receive_message(BargeIn(heard_ms=20, discarded_ms=0)) == []
        assert [core.receive_audio(FRAME) for _ in range(7)] == [[]] * 7
        assert any(isinstance(i, bytes) for i in core.receive_audio(FRAME))  # next spurt
        assert core.stats().barge_ins == 1

    def test_hangs_up_when_told_and_stops_on_stop(self) -> None:
        core = pattern(hangup_after_ms=60)
        assert core.receive_audio(FRAME)
        assert core.receive_audio(FRAME)
        assert core.receive_audio(FRAME) == [Hangup(reason="pattern_done")]
        assert core.receive_audio(FRAME) == []
        other = pattern()
        other.receive_message(Stop(reason="drain"))
        assert other.receive_audio(FRAME) == []
        assert other.stats().stop_reason == "drain"

    def test_refuses_unusable_settings(self) -> None:
        with pytest.raises(ValueError, match="talk_ms"):
            PatternCore(make_start(), tone(16000, 400), talk_ms=0, listen_ms=0)
        with pytest.raises(ValueError, match="source"):
            PatternCore(make_start(), b"\0\0", talk_ms=100, listen_ms=0)


async def test_pattern_mode_talks_the_fixture_at_the_agent_rate(ws_link: LinkMaker) -> None:
    config = AgentServerConfig(secret=SECRET, mode="pattern", talk_ms=200, fixture=FIXTURE)
    server = await start_server(make_app(config))
    link = ws_link(ws_url(server))
    await link.open(make_start(agent_rate=24000))
    for frame in call_audio(0)[:10]:
        link.send_audio(frame)
    items = await collect(link, has_mark("talk-1"))
    await link.close(Stop(reason="caller_hangup"))
    await server.close()
    assert items[0] == Transcript(role="agent", text="<talk 1>")
    assert [len(i) for i in items if isinstance(i, bytes)] == [960] * 10  # 20 ms at 24 kHz
    (record,) = call_records(server.app)
    assert (record.mode, record.frames_in, record.frames_out, record.stop_reason) == (
        "pattern", 10, 10, "caller_hangup",
    )  # fmt: skip
    assert record.core["marks_sent"] == 1
    assert record.close_code == CloseCode.NORMAL


async def test_requests_without_a_valid_token_get_401(
    http: aiohttp.ClientSession, echo_server: TestServer
) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer x.y.z"}):
        async with http.get(echo_server.make_url(f"/agents/{AGENT_ID}"), headers=headers) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    "start_text",
    [
        encode_message(make_start(call_id="another-call")),  # not the token's call
        encode_message(make_start()).replace("rymi-agent/1", "rymi-agent/2"),
        '{"type":"stop","reason":"caller_hangup"}',  # start must come first
    ],
    ids=["wrong-call", "unknown-major-version", "not-start"],
)
async def test_a_bad_start_is_a_policy_violation(
    http: aiohttp.ClientSession, echo_server: TestServer, start_text: str
) -> None:
    token = issue_agent_token(SECRET, agent_id=AGENT_ID, call_id="call-1", now=time.time())
    headers = {"Authorization": f"Bearer {token}"}
    async with http.ws_connect(ws_url(echo_server), headers=headers) as ws:
        await ws.send_str(start_text)
        msg = await ws.receive(timeout=GUARD_S)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == CloseCode.POLICY_VIOLATION


async def test_malformed_gateway_messages_are_answered(
    http: aiohttp.ClientSession, echo_server: TestServer
) -> None:
    token = issue_agent_token(SECRET, agent_id=AGENT_ID, call_id="call-1", now=time.time())
    headers = {"Authorization": f"Bearer {token}"}
    async with http.ws_connect(ws_url(echo_server), headers=headers) as ws:
        await ws.send_str(encode_message(make_start()))
        await ws.send_str('{"type":"mark_played"}')
        reply = decode_agent_message(await ws.receive_str(timeout=GUARD_S))
        assert isinstance(reply, Error)
        assert reply.code == "malformed"


async def test_a_real_process_serves_and_stops_cleanly_on_sigterm(
    ws_link: LinkMaker, tmp_path: Path
) -> None:
    stats_file = tmp_path / "calls.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.agent_server", "--port", "0",
        "--secret", SECRET.decode(), "--mode", "echo", "--stats-file", str(stats_file),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(GUARD_S):
            banner = (await process.stdout.readline()).decode()
        base = banner.split()[-1].rstrip("/")  # ws://127.0.0.1:PORT/agents
        finished = ws_link(f"{base}/{AGENT_ID}")
        await finished.open(make_start(call_id="call-1"))
        for frame in call_audio()[:300]:
            finished.send_audio(frame)
            await asyncio.sleep(0)
        assert isinstance(await collect(finished, lambda i: bool(i)), list)
        await finished.close(Stop(reason="caller_hangup"))
        live = ws_link(f"{base}/{AGENT_ID}")
        await live.open(make_start(call_id="call-2"))
        process.send_signal(signal.SIGTERM)
        with pytest.raises(AgentError) as info:
            async with asyncio.timeout(GUARD_S):
                await live.receive()
        assert info.value.reason == LinkFailure.CLOSED  # before stop: an agent failure
        assert "code 1001" in str(info.value)  # going away (RFC 6455 §7.4.1)
        await live.close()
        async with asyncio.timeout(GUARD_S):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    calls = json.loads(stats_file.read_text(encoding="utf-8"))["calls"]
    assert [c["call_id"] for c in calls] == ["call-1", "call-2"]
    assert calls[0]["stop_reason"] == "caller_hangup"
    assert calls[0]["core"]["utterances"] >= 1
    assert calls[1]["stop_reason"] is None  # cut by the shutdown, recorded all the same
