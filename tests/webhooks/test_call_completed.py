"""End to end: a caller hangs up mid-sentence; exactly one ``call.completed`` arrives.

A real gateway (tests/server/harness.py) with its webhook dispatcher running, a real
WebSocket agent that writes a transcript line every 25 caller frames (0.5 s of audio),
and a real receiver. The caller sends 2.4 s of speech and hangs up in the middle of the
first phrase: the one delivery carries the transcript up to the hang-up (the four lines
the agent wrote) and matches the final call record.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.bridge.protocol import verify_agent_token
from gateway.store.secrets import Secret
from gateway.webhooks.endpoints import WebhookStore
from tests.server.agents import AGENT_SECRET, agent_server
from tests.server.harness import (
    call_answer,
    connect_media,
    final_record,
    load_speech,
    new_call_id,
    running_gateway,
    to_carrier,
)
from tests.webhooks.conftest import SECRET, receiver, sdk_verify

LINE_EVERY_FRAMES = 25


@dataclass
class TranscribingAgent:
    """Writes ``part N`` (role caller) after every 25 audio frames it receives."""

    frames: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        verify_agent_token(
            token, AGENT_SECRET.encode(), agent_id=request.match_info["agent"], now=time.time()
        )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.frames += 1
                if self.frames % LINE_EVERY_FRAMES == 0:
                    part = self.frames // LINE_EVERY_FRAMES
                    line = {"type": "transcript", "role": "caller", "text": f"part {part}"}
                    await ws.send_str(json.dumps(line))
        return ws


async def test_hangup_mid_sentence_yields_one_call_completed(tmp_path: Path) -> None:
    frames, _ = to_carrier(load_speech(), "twilio")
    sent = frames[:120]  # 2.4 s: the hang-up falls in the middle of the first phrase
    async with (
        agent_server(TranscribingAgent()) as agent,
        receiver() as rx,
        running_gateway(tmp_path, webhook_dev_mode=True, webhook_poll_interval_s=0.05) as gw,
        aiohttp.ClientSession() as http,
    ):
        tenant, created = await gw.tenant(
            "twilio", pipeline=agent.url + "/x", pipeline_secret=Secret(AGENT_SECRET)
        )
        await gw.engine.state.directory.update_agent(
            tenant.id,
            created.id,
            pipeline=f"{agent.url}/{created.id}",
            pipeline_secret=Secret(AGENT_SECRET),
        )
        state = gw.engine.state
        store = WebhookStore(state.engine, state.keyring)
        await store.create(tenant.id, rx.url("c"), ["call.completed"], SECRET)
        sid = new_call_id("twilio")
        answer = await call_answer(gw, http, "twilio", sid)
        assert answer.media_url is not None, answer.body
        call = await connect_media(gw, http, "twilio", sid, answer)
        await call.open()
        await call.send_frames(sent)
        await call.hang_up()
        record = await final_record(gw, "twilio", sid)
        async with asyncio.timeout(10):
            [delivery] = await rx.wait_for("c", 1)
        await asyncio.sleep(0.5)  # nothing else arrives
        transcript = await state.ledger.transcript(record.id)
        got = rx.got("c")
        registry = gw.engine.metrics.registry
        delivered = registry.get_sample_value(
            "gateway_webhook_deliveries_total", {"outcome": "delivered"}
        )
        succeeded = registry.get_sample_value(
            "gateway_webhook_attempts_total", {"outcome": "success"}
        )
        timed = registry.get_sample_value("gateway_webhook_delivery_latency_seconds_count")
    # The dispatcher's figures reach the gateway's /metrics registry.
    assert (delivered, succeeded, timed) == (1.0, 1.0, 1.0)
    assert len(got) == 1
    assert sdk_verify(delivery, SECRET)
    event = delivery.event
    assert event["type"] == "call.completed"
    data = event["data"]
    assert (data["call_id"], data["end_reason"], data["status"]) == (
        record.id,
        "caller_hangup",
        "completed",
    )
    assert data["billable_seconds"] == (record.billable_units or 0) * 30
    texts = [line["text"] for line in data["transcript"]]
    assert texts == [line.text for line in transcript]
    assert texts == [f"part {n}" for n in range(1, len(sent) // LINE_EVERY_FRAMES + 1)]
