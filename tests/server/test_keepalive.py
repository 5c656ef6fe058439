"""The carrier media socket's keepalive: pings on a live call, 1011 for a silent carrier.

aiohttp's own heartbeat is off on carrier sockets (it re-armed a timer on every
message); the call runner pings every ``media_ping_interval_s`` and ends a call whose
carrier sent no caller audio for a whole interval (reliability.md 5.3).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import CloseCode
from gateway.server.limits import Keepalive
from gateway.store.models import CallStatus
from tests.server.harness import (
    call_answer,
    connect_media,
    final_record,
    new_call_id,
    open_calls,
    running_gateway,
    silence,
)

pytestmark = pytest.mark.both_loops

_INTERVAL = 0.3  # seconds between pings in these tests (20 s in production)


def test_keepalive_passes_while_frames_arrive_and_fails_on_an_interval_without() -> None:
    keepalive = Keepalive(20.0, now=100.0)
    assert keepalive.next_at == 120.0
    assert keepalive.check(120.0, frames_in=1000)  # frames since the start
    assert keepalive.next_at == 140.0
    assert keepalive.check(140.0, frames_in=1001)  # one frame is enough
    assert not keepalive.check(160.0, frames_in=1001)  # none for 20 s: gone
    with pytest.raises(ValueError, match="interval_s"):
        Keepalive(0.0, now=0.0)


async def test_a_streaming_call_is_pinged_and_goes_on(tmp_path: Path) -> None:
    async with (
        running_gateway(tmp_path, media_ping_interval_s=_INTERVAL) as gw,
        aiohttp.ClientSession() as http,
    ):
        await gw.tenant("twilio")
        sid = new_call_id("twilio")
        answer = await call_answer(gw, http, "twilio", sid)
        call = await connect_media(gw, http, "twilio", sid, answer, autoping=False)
        for message in call.side.open():
            assert isinstance(message, str)
            await call.ws.send_str(message)
        kinds: list[aiohttp.WSMsgType] = []

        async def read() -> None:
            async for msg in call.ws:
                kinds.append(msg.type)  # noqa: PERF401 - read while the call runs

        reader = asyncio.create_task(read())
        sent = await call.send_frames(silence("twilio", 1200))  # four intervals
        assert sent == 60
        assert not call.ws.closed
        assert kinds.count(aiohttp.WSMsgType.PING) >= 2
        for message in call.side.stop():
            assert isinstance(message, str)
            await call.ws.send_str(message)
        await call.ws.close()
        await reader
        record = await final_record(gw, "twilio", sid)
    assert (record.status, record.end_reason) == (CallStatus.COMPLETED, "caller_hangup")


async def test_a_silent_carrier_is_closed_with_1011_next_to_a_healthy_call(
    tmp_path: Path,
) -> None:
    async with (
        running_gateway(tmp_path, media_ping_interval_s=_INTERVAL) as gw,
        aiohttp.ClientSession() as http,
    ):
        await gw.tenant("twilio")
        sids, calls = await open_calls(gw, http, "twilio", 2)
        silent, healthy = calls
        streaming = asyncio.create_task(healthy.send_frames(silence("twilio", 1500)))
        await silent.send_frames(silence("twilio", 100))  # then nothing, socket open
        await asyncio.wait_for(silent.closed.wait(), timeout=3 * _INTERVAL + 1)
        assert silent.ws.close_code == CloseCode.INTERNAL_ERROR
        assert await streaming == 75
        assert not healthy.ws.closed
        await healthy.hang_up()
        silent_record = await final_record(gw, "twilio", sids[0])
        healthy_record = await final_record(gw, "twilio", sids[1])
    assert (silent_record.status, silent_record.end_reason) == (CallStatus.FAILED, "carrier_error")
    assert healthy_record.end_reason == "caller_hangup"
