"""The paced writer writes agent audio that is already due at once, not on a timer.

An agent streaming in real time sends each frame when the pacer already owes the
carrier one: the frame goes out from the agent-audio callback itself, with no
``loop.call_at`` round trip (docs/performance.md). Audio ahead of its time still waits
for its deadline.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.server.call import CallRunner
from tests.server.harness import call_answer, connect_media, new_call_id, running_gateway

pytestmark = pytest.mark.both_loops

_FRAME_16K = bytes(640)  # 20 ms of PCM16 at the agent's 16 kHz


async def test_due_agent_audio_is_written_before_its_callback_returns(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        await gw.tenant("twilio")
        sid = new_call_id("twilio")
        answer = await call_answer(gw, http, "twilio", sid)
        call = await connect_media(gw, http, "twilio", sid, answer)
        for message in call.side.open():
            assert isinstance(message, str)
            await call.ws.send_str(message)
        async with asyncio.timeout(5):
            while not gw.engine.live.calls:  # noqa: ASYNC110 (no event for this)
                await asyncio.sleep(0.01)
        (runner,) = gw.engine.live.calls.values()
        assert isinstance(runner, CallRunner)
        async with asyncio.timeout(5):
            while not runner.agent_ready:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # what the echo agent had queued has played out

        before = runner.meter.frames_out
        runner._agent_audio(_FRAME_16K)  # due at once: the pacer owes the carrier audio
        assert runner.meter.frames_out == before + 1  # written, no await in between

        lead = gw.engine.settings.pacer_lead_frames
        burst = [_FRAME_16K] * (lead + 5)
        sent_before = runner.meter.frames_out
        for frame in burst:
            runner._agent_audio(frame)
        written_now = runner.meter.frames_out - sent_before
        assert written_now < len(burst)  # ahead of its time: the rest waits its deadline
        async with asyncio.timeout(5):
            while runner.meter.frames_out - sent_before < len(burst):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await call.ws.close()
