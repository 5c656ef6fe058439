"""The reference agent server's probe mode and per-message timing (what the tester reads)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec

from gateway.bridge.protocol import Stop, encode_message
from gateway.errors import CloseCode
from loadtest.agent_call import (
    TAKE_LIMIT,
    CallLog,
    CallRecord,
    CallTiming,
    records_by_call,
    stats_json,
)
from loadtest.agent_pattern import ProbeCore
from loadtest.agent_server import AgentServerConfig
from tests.bridge.conftest import GUARD_S, SECRET, make_start
from tests.loadtest.conftest import ServeAgent, bearer


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


async def test_timing_records_every_audio_message_in_and_out(serve_agent: ServeAgent) -> None:
    served = await serve_agent(AgentServerConfig(secret=SECRET, mode="probe", timing=True))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(served.ws_url(), headers=bearer()) as ws:
            before = time.monotonic()
            await ws.send_str(encode_message(make_start()))
            for _ in range(5):
                await ws.send_bytes(bytes(640))
                echoed = await asyncio.wait_for(ws.receive(), GUARD_S)
                assert echoed.data == bytes(640)
            await ws.send_str(encode_message(Stop(reason="caller_hangup")))
            await ws.close()
        await asyncio.wait_for(served.wait_for_calls(1), GUARD_S)
    (record,) = served.records()
    assert (record.frames_in, record.frames_out, record.bytes_in) == (5, 5, 3200)
    assert (record.messages_in, record.stop_reason) == (1, "caller_hangup")
    assert record.close_code == CloseCode.NORMAL
    timing = record.timing
    assert timing is not None
    assert list(timing.in_bytes) == list(timing.out_bytes) == [640] * 5
    assert before <= timing.start_at <= timing.in_at[0]
    assert list(timing.in_at) == sorted(timing.in_at)
    assert all(o >= i for i, o in zip(timing.in_at, timing.out_at, strict=True))


async def test_take_returns_the_records_once(serve_agent: ServeAgent) -> None:
    """A soak takes the records of ended calls so neither side keeps an hour of them."""
    served = await serve_agent(AgentServerConfig(secret=SECRET, mode="probe", timing=True))
    async with aiohttp.ClientSession() as http:
        for call_id in ("call-1", "call-2"):
            async with http.ws_connect(served.ws_url(), headers=bearer(call_id)) as ws:
                await ws.send_str(encode_message(make_start(call_id)))
                await ws.send_bytes(bytes(640))
                await ws.receive(timeout=GUARD_S)
                await ws.send_str(encode_message(Stop(reason="caller_hangup")))
                await ws.close()
        await asyncio.wait_for(served.wait_for_calls(2), GUARD_S)
        async with http.get(f"{served.base}/stats/take") as response:
            taken = await response.json()
        async with http.get(f"{served.base}/stats") as response:
            left = await response.json()
    assert sorted(r["call_id"] for r in taken["calls"]) == ["call-1", "call-2"]
    assert (taken["ended"], taken["active"]) == (2, 0)
    records = records_by_call(taken)
    assert [list(records[c]["timing"]["in_bytes"]) for c in ("call-1", "call-2")] == [[640]] * 2
    in_at = records["call-1"]["timing"]["in_at"]  # the monotonic clock, as the tester's
    assert len(in_at) == 1
    assert records["call-1"]["timing"]["start_at"] <= in_at[0] <= time.monotonic()
    assert (left["calls"], left["ended"]) == ([], 2)


def test_timing_arrays_go_as_raw_bytes_and_come_back_exact() -> None:
    """Each of a record's four arrays is one base64 string, not a JSON number per frame."""
    timing = CallTiming(12.5)
    timing.in_at.extend([12.5 + k * 0.02 + 1e-9 * k for k in range(3000)])
    timing.in_bytes.extend([640] * 3000)
    timing.out_at.extend([12.6, 12.62])
    timing.out_bytes.extend([640, 320])
    record = CallRecord("c1", "a1", "probe", 0.0, timing=timing)
    wire = msgspec.json.decode(msgspec.json.encode({"calls": [record.as_json()]}))
    assert isinstance(wire["calls"][0]["timing"]["in_at"], str)
    back = records_by_call(wire)["c1"]["timing"]
    assert back["start_at"] == 12.5
    assert back["in_at"] == timing.in_at  # bit for bit
    assert back["in_bytes"] == timing.in_bytes
    assert (back["out_at"], back["out_bytes"]) == (timing.out_at, timing.out_bytes)


def test_a_take_returns_the_oldest_records_a_few_at_a_time() -> None:
    calls = CallLog()
    for k in range(TAKE_LIMIT + 3):
        calls.add(CallRecord(f"c{k}", "a1", "probe", 0.0))
    first = stats_json(calls, active=1, take=True)
    assert [r["call_id"] for r in first["calls"]] == [f"c{k}" for k in range(TAKE_LIMIT)]
    assert first["more"] is True
    second = stats_json(calls, active=1, take=True)
    assert [r["call_id"] for r in second["calls"]] == [
        f"c{k}" for k in range(TAKE_LIMIT, TAKE_LIMIT + 3)
    ]
    assert (second["more"], second["ended"]) == (False, TAKE_LIMIT + 3)
    assert stats_json(calls, active=0)["calls"] == []  # taken records are forgotten
