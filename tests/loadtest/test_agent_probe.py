"""The reference agent server's probe mode and per-message timing (what the tester reads)."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from gateway.bridge.protocol import Stop, encode_message, issue_agent_token
from loadtest.agent_pattern import ProbeCore
from loadtest.agent_server import AgentServerConfig, call_records, make_app, wait_for_calls
from tests.bridge.conftest import AGENT_ID, GUARD_S, SECRET, make_start, start_server, ws_url


def test_probe_sends_each_frame_straight_back() -> None:
    core = ProbeCore(make_start())
    frame = bytes(range(256)) * 2 + bytes(128)
    assert core.receive_audio(frame) == [frame]
    assert core.receive_message(Stop(reason="caller_hangup")) == []
    assert core.stats().caller_frames == 1
    assert core.stats().stop_reason == "caller_hangup"


def test_probe_resamples_to_the_agent_rate() -> None:
    core = ProbeCore(make_start(agent_rate=24000))
    out = [
        len(item)
        for _ in range(5)
        for item in core.receive_audio(bytes(640))
        if isinstance(item, bytes)
    ]
    assert out == [960] * 5  # 20 ms at 24 kHz


async def test_timing_records_every_audio_message_in_and_out() -> None:
    app = make_app(AgentServerConfig(secret=SECRET, mode="probe", timing=True))
    server = await start_server(app)
    token = issue_agent_token(SECRET, agent_id=AGENT_ID, call_id="call-1", now=time.time())
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.ws_connect(ws_url(server), headers=headers) as ws:
                before = time.monotonic()
                await ws.send_str(encode_message(make_start()))
                for _ in range(5):
                    await ws.send_bytes(bytes(640))
                    echoed = await asyncio.wait_for(ws.receive(), GUARD_S)
                    assert echoed.data == bytes(640)
                await ws.send_str(encode_message(Stop(reason="caller_hangup")))
                await ws.close()
            await asyncio.wait_for(wait_for_calls(app, 1), GUARD_S)
    finally:
        await server.close()
    (record,) = call_records(app)
    timing = record.timing
    assert timing is not None
    assert timing.in_bytes == timing.out_bytes == [640] * 5
    assert before <= timing.start_at <= timing.in_at[0]
    assert timing.in_at == sorted(timing.in_at)
    assert all(o >= i for i, o in zip(timing.in_at, timing.out_at, strict=True))


async def test_take_returns_the_records_once() -> None:
    """A soak takes the records of ended calls so neither side keeps an hour of them."""
    app = make_app(AgentServerConfig(secret=SECRET, mode="probe", timing=True))
    server = await start_server(app)
    try:
        async with aiohttp.ClientSession() as http:
            for call_id in ("call-1", "call-2"):
                token = issue_agent_token(
                    SECRET, agent_id=AGENT_ID, call_id=call_id, now=time.time()
                )
                headers = {"Authorization": f"Bearer {token}"}
                async with http.ws_connect(ws_url(server), headers=headers) as ws:
                    await ws.send_str(encode_message(make_start(call_id)))
                    await ws.send_str(encode_message(Stop(reason="caller_hangup")))
                    await ws.close()
            await asyncio.wait_for(wait_for_calls(app, 2), GUARD_S)
            async with http.post(server.make_url("/stats/take")) as response:
                taken = await response.json()
            async with http.get(server.make_url("/stats")) as response:
                left = await response.json()
    finally:
        await server.close()
    assert sorted(r["call_id"] for r in taken["calls"]) == ["call-1", "call-2"]
    assert (taken["ended"], taken["active"]) == (2, 0)
    assert (left["calls"], left["ended"]) == ([], 2)
