"""Whole calls through the echo agent, per carrier, over real loopback sockets.

Threshold for the audio check: the echo of the second phrase, as the carrier's playback
buffer played it, must have a normalized cross-correlation of at least 0.8 with the
speech the caller sent, at the best alignment (μ-law and two resamplings cost a little;
silence or noise scores near 0).
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from gateway.bridge.builtin import BuiltinLink
from gateway.bridge.echo import EchoCore
from gateway.bridge.link import AgentLink
from gateway.metering import RATE_PER_MINUTE_MICROS, Role
from gateway.server import Engine, default_links
from gateway.store.ledger import Ledger
from gateway.store.models import Agent, CallStatus, TranscriptLine
from gateway.store.sql.engine import create_engine
from tests.server.harness import (
    Pcm,
    PlayedCall,
    best_correlation,
    call_answer,
    connect_media,
    final_record,
    load_speech,
    new_call_id,
    running_gateway,
    silence,
    to_carrier,
    to_pcm,
)

CARRIERS = ["twilio", "plivo", "vonage"]
MIN_CORRELATION = 0.8


def _clear_sent(call: PlayedCall) -> bool:
    if call.carrier == "vonage":
        return any(t.get("action") == "clear" for t in call.texts())
    name = "clearAudio" if call.carrier == "plivo" else "clear"
    return any(t.get("event") == name for t in call.texts())


def _marks_sent(call: PlayedCall) -> list[str]:
    names = []
    for t in call.texts():
        if call.carrier == "twilio" and t.get("event") == "mark":
            names.append(t["mark"]["name"])
        elif call.carrier == "plivo" and t.get("event") == "checkpoint":
            names.append(t["name"])
        elif call.carrier == "vonage" and t.get("action") == "notify":
            names.append(t["payload"]["rymi_mark"])
    return names


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_full_call_through_echo(tmp_path: Path, carrier: str) -> None:
    speech = load_speech()
    frames, frame_bytes = to_carrier(speech, carrier)
    links: list[AgentLink] = []

    async def keep(engine: Engine, agent: Agent) -> AgentLink:
        links.append(await default_links(engine, agent))
        return links[-1]

    async with running_gateway(tmp_path, links=keep) as gw, aiohttp.ClientSession() as http:
        tenant, agent = await gw.tenant(carrier, role=Role.SPECIALIST)
        carrier_call_id = new_call_id(carrier)
        answer = await call_answer(gw, http, carrier, carrier_call_id)
        assert answer.status == 200, answer.body
        assert answer.media_url is not None, answer.body
        call = await connect_media(gw, http, carrier, carrier_call_id, answer)
        await call.open()
        began = time.monotonic()
        # The two phrases (the echo of the first is interrupted by the second: barge-in),
        # then silence while the second is echoed, then keys: 5 (a transcript line), #
        # (the agent plays the collected digits back as DTMF where the carrier can).
        frames_sent = await call.send_frames(frames)
        frames_sent += await call.send_frames(silence(carrier, 4000))
        await call.dtmf("5")
        await call.dtmf("#")
        frames_sent += await call.send_frames(silence(carrier, 400))
        ended = time.monotonic()
        await call.hang_up()
        record = await final_record(gw, carrier, carrier_call_id)

    # Audio back: exact 20 ms frames in the carrier's format, and it is our speech.
    out_frames = call.audio_frames()
    assert out_frames, "no audio came back"
    assert {len(f) for f in out_frames} == {frame_bytes}
    heard = to_pcm(bytes(call.heard), carrier)
    sent = to_pcm(b"".join(frames), carrier)
    tail = _last_utterance(heard)
    assert len(tail) > 8000 * 0.5  # at least half a second of echoed speech
    score = best_correlation(sent, tail)
    assert score >= MIN_CORRELATION, f"correlation {score:.3f}"
    # Barge-in: the second phrase cleared the echo of the first, on the carrier too.
    assert _clear_sent(call)
    # Marks: placed in the carrier's stream, and reported heard to the agent.
    assert any(name.startswith("utt-") for name in _marks_sent(call))
    echo = links[0]
    assert isinstance(echo, BuiltinLink)
    assert isinstance(echo.core, EchoCore)
    stats = echo.core.stats()
    assert stats.marks_played >= 1
    assert stats.barge_ins >= 1
    # Every caller frame reached the agent (20 ms each at 16 kHz; the last may sit in
    # the agent's own framer).
    assert stats.caller_frames >= frames_sent - 1
    assert stats.stop_reason == "caller_hangup"
    # DTMF to the agent (its transcript line) and, on Plivo, back to the caller.
    lines = [line.text for line in await gw_transcript(tmp_path, record.id)]
    assert "<dtmf 5>" in lines
    if carrier == "plivo":
        assert any(t.get("event") == "sendDTMF" for t in call.texts())
    # The CDR: caller hang-up, billed from the first frame to the hang-up.
    assert record.status is CallStatus.COMPLETED
    assert record.end_reason == "caller_hangup"
    assert record.tenant_id == tenant.id
    assert record.agent_id == agent.id
    span_ms = (ended - began) * 1000
    assert abs(record.audio_ms - span_ms) < 1500
    units = -(-record.audio_ms // 30_000)
    assert units == 1
    assert record.billable_units == units
    assert record.cost_micros == units * RATE_PER_MINUTE_MICROS[Role.SPECIALIST] // 2


def _last_utterance(pcm: Pcm) -> Pcm:
    """The last stretch of non-silent audio (20 ms blocks above -40 dBFS, gaps < 200 ms)."""
    block = 160
    blocks = len(pcm) // block
    loud = [
        float(np.sqrt(np.mean(pcm[i * block : (i + 1) * block] ** 2))) > 327 for i in range(blocks)
    ]
    end = max((i for i, v in enumerate(loud) if v), default=-1)
    if end < 0:
        return pcm[:0]
    start, gap = end, 0
    for i in range(end, -1, -1):
        gap = 0 if loud[i] else gap + 1
        if gap > 10:
            break
        start = i
    return pcm[start * block : (end + 1) * block]


async def gw_transcript(tmp_path: Path, call_id: str) -> list[TranscriptLine]:
    """The call's transcript, read from the database file after the gateway stopped."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/gw.db")
    try:
        return await Ledger(engine).transcript(call_id)
    finally:
        await engine.dispose()
