"""Ending paths and faults: agent down or dying, hang-ups from every side, no lost audio."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.server.answer import call_id_for
from gateway.store.coordination import Command
from gateway.store.ledger import Ledger
from gateway.store.models import CallStatus
from gateway.store.secrets import Secret
from gateway.store.sql.engine import create_engine
from rymi_codecs import L16_16K, MULAW_8K, CallerToAgent
from tests.helpers.redis_server import free_port
from tests.server.agents import AGENT_SECRET, RecordingAgent, agent_server
from tests.server.harness import (
    GatewayUnderTest,
    PlayedCall,
    call_answer,
    connect_media,
    final_record,
    live_slots_once_released,
    load_speech,
    new_call_id,
    running_gateway,
    silence,
    to_carrier,
)


async def _start_call(
    gw: GatewayUnderTest, http: aiohttp.ClientSession, carrier: str
) -> tuple[str, PlayedCall]:
    sid = new_call_id(carrier)
    answer = await call_answer(gw, http, carrier, sid)
    assert answer.media_url is not None, answer.body
    call = await connect_media(gw, http, carrier, sid, answer)
    await call.open()
    return sid, call


async def test_agent_down_at_start_hangs_up_after_grace_unbilled(tmp_path: Path) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/agent"
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        tenant, _ = await gw.tenant("twilio", pipeline=dead, pipeline_secret=Secret(AGENT_SECRET))
        sid, call = await _start_call(gw, http, "twilio")
        sender = asyncio.create_task(call.send_frames(silence("twilio", 5000)))
        await asyncio.wait_for(call.closed.wait(), timeout=5)
        sender.cancel()
        record = await final_record(gw, "twilio", sid)
        await asyncio.wait_for(gw.api.seen.wait(), timeout=2)
        balance = await gw.engine.state.ledger.balance_micros(tenant.id)
        active = await live_slots_once_released(gw, tenant.id)
    assert (record.status, record.end_reason) == (CallStatus.FAILED, "agent_error")
    assert record.audio_ms == 0
    assert record.billable_units == 0
    assert balance == 5_000_000
    assert call.audio_frames() == []  # the caller heard silence, nothing broken
    assert gw.api.requests[0][0] == "POST"  # the carrier leg was hung up over REST
    assert active == 0


@pytest.mark.both_loops
async def test_agent_dying_mid_call_bills_only_audio_exchanged(tmp_path: Path) -> None:
    async with (
        agent_server(RecordingAgent(die_after_frames=50)) as agent,
        running_gateway(tmp_path) as gw,
        aiohttp.ClientSession() as http,
    ):
        _, created = await gw.tenant(
            "plivo", pipeline=agent.url + "/x", pipeline_secret=Secret(AGENT_SECRET)
        )
        await gw.engine.state.directory.update_agent(
            created.tenant_id,
            created.id,
            pipeline=f"{agent.url}/{created.id}",
            pipeline_secret=Secret(AGENT_SECRET),
        )
        sid, call = await _start_call(gw, http, "plivo")
        sender = asyncio.create_task(call.send_frames(silence("plivo", 6000)))
        await asyncio.wait_for(call.closed.wait(), timeout=6)
        sent = 6000 // 20 if not sender.done() else sender.result()
        sender.cancel()
        record = await final_record(gw, "plivo", sid)
    assert (record.status, record.end_reason) == (CallStatus.FAILED, "agent_error")
    # Billed from the first frame to the agent's failure (~1 s), not the grace after it.
    assert 500 <= record.audio_ms <= 1600
    assert record.billable_units == 1
    assert agent.frames >= 50
    assert sent > 50


@pytest.mark.both_loops
@pytest.mark.parametrize("carrier", ["twilio", "vonage"])
async def test_caller_hangup_mid_sentence_loses_no_audio(tmp_path: Path, carrier: str) -> None:
    frames, _ = to_carrier(load_speech(), carrier)
    sent = frames[:120]  # 2.4 s: the hang-up falls in the middle of the first phrase
    async with (
        agent_server(RecordingAgent()) as agent,
        running_gateway(tmp_path) as gw,
        aiohttp.ClientSession() as http,
    ):
        _, created = await gw.tenant(
            carrier, pipeline=agent.url + "/x", pipeline_secret=Secret(AGENT_SECRET)
        )
        await gw.engine.state.directory.update_agent(
            created.tenant_id,
            created.id,
            pipeline=f"{agent.url}/{created.id}",
            pipeline_secret=Secret(AGENT_SECRET),
        )
        sid, call = await _start_call(gw, http, carrier)
        await call.send_frames(sent)
        await call.hang_up()
        record = await final_record(gw, carrier, sid)
    # Every caller frame reached the agent: 20 ms at 16 kHz PCM16 = 640 bytes each, plus
    # the 8 -> 16 kHz resampler's flushed tail (its filter delay) for μ-law carriers.
    chain = CallerToAgent(MULAW_8K if carrier == "twilio" else L16_16K, 16000)
    expected = sum(len(chain.process(f)) for f in sent) + len(chain.flush())
    assert expected >= len(sent) * 640
    assert agent.audio_bytes == expected
    assert agent.messages[0] == "Start"
    assert agent.messages[-1] == "Stop"
    assert record.end_reason == "caller_hangup"


@pytest.mark.both_loops
@pytest.mark.parametrize("carrier", ["twilio", "plivo"])
async def test_a_hangup_read_late_bills_the_audio_streamed_not_the_stall(
    tmp_path: Path, carrier: str
) -> None:
    # The gateway shares this loop: blocking it right after the stop is written is the
    # gateway not being scheduled when the hang-up arrives (a VM's steal, a long pause).
    # Its own clock then reads the hang-up 600 ms late; the caller's media clock (1 s of
    # audio streamed) does not, and bills the call as the load tester counts it.
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        await gw.tenant(carrier)
        sid, call = await _start_call(gw, http, carrier)
        assert await call.send_frames(silence(carrier, 1000)) == 50
        for message in call.side.stop():
            assert isinstance(message, str)  # Twilio's and Plivo's stop events are JSON
            await call.ws.send_str(message)
        time.sleep(0.6)  # noqa: ASYNC251 -- blocking the loop is the point
        assert call.first_frame_at is not None
        clock_span = time.monotonic() - call.first_frame_at  # what the clock alone reads
        await call.ws.close()
        await call.finish()
        record = await final_record(gw, carrier, sid)
    assert record.end_reason == "caller_hangup"
    assert clock_span >= 1.55
    # First frame to the agent → the last: 49 frames' worth (the echo agent is
    # connected before the first frame), not 1.6 s.
    assert 900 <= record.audio_ms <= 1000, record.audio_ms


@pytest.mark.both_loops
async def test_agent_hangup_ends_the_call_and_the_carrier_leg(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        await gw.tenant("plivo")
        sid, call = await _start_call(gw, http, "plivo")
        await call.send_frames(silence("plivo", 200))
        await call.dtmf("*")  # the echo agent hangs up on *
        sender = asyncio.create_task(call.send_frames(silence("plivo", 3000)))
        await asyncio.wait_for(call.closed.wait(), timeout=5)
        sender.cancel()
        record = await final_record(gw, "plivo", sid)
        await asyncio.wait_for(gw.api.seen.wait(), timeout=2)
    assert (record.status, record.end_reason) == (CallStatus.COMPLETED, "agent_hangup")
    method, path, _ = gw.api.requests[0]
    assert method == "DELETE"
    assert path.endswith(f"/Call/{sid}/")


async def test_admin_hangup_through_the_command_channel(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        tenant, _ = await gw.tenant("vonage")
        sid, call = await _start_call(gw, http, "vonage")
        sender = asyncio.create_task(call.send_frames(silence("vonage", 5000)))
        await asyncio.sleep(0.5)
        await gw.engine.coordination.send_command(call_id_for("vonage", sid), Command.HANGUP)
        await asyncio.wait_for(call.closed.wait(), timeout=3)
        sender.cancel()
        record = await final_record(gw, "vonage", sid)
        active = await live_slots_once_released(gw, tenant.id)
    assert (record.status, record.end_reason) == (CallStatus.COMPLETED, "admin_hangup")
    assert record.billable_units == 1
    assert active == 0


async def test_shutdown_drains_live_calls(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        async with running_gateway(tmp_path) as gw:
            await gw.tenant("twilio")
            sid, call = await _start_call(gw, http, "twilio")
            sender = asyncio.create_task(call.send_frames(silence("twilio", 5000)))
            await asyncio.sleep(0.5)
            api = gw.api
        # The gateway stopped: the call was ended with "drain", finalized and hung up.
        await asyncio.wait_for(call.closed.wait(), timeout=2)
        sender.cancel()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/gw.db")
    try:
        record = await Ledger(engine).get_call(call_id_for("twilio", sid))
    finally:
        await engine.dispose()
    assert (record.status, record.end_reason) == (CallStatus.COMPLETED, "drain")
    assert record.billable_units == 1
    assert [method for method, _, _ in api.requests] == ["POST"]
