"""Drain of a real ``rymi-gateway serve`` subprocess with live calls (SIGTERM).

Two calls are live when the first SIGTERM arrives: a Twilio call whose caller goes on
speaking and then hangs up (it must complete with its echo intact), and a Vonage call
that would go on for a long time (the second SIGTERM must hang it up, finalized with
reason ``drain`` and billed). Meanwhile ``/readyz`` must answer 503 at once and a new
answer must be refused with 503. The process must exit 0.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from gateway.server.answer import call_id_for
from gateway.store.ledger import Ledger
from gateway.store.models import CallRecord, CallStatus
from gateway.store.sql.engine import create_engine
from tests.ops.gateway_proc import GatewayProcess, base_env, seed
from tests.server.harness import (
    Pcm,
    best_correlation,
    call_answer,
    connect_media,
    load_speech,
    new_call_id,
    silence,
    to_carrier,
    to_pcm,
)

MIN_CORRELATION = 0.8  # as in tests/server/test_calls.py


def _longest_utterance(pcm: Pcm) -> Pcm:
    """The longest stretch of speech (20 ms blocks above -40 dBFS, gaps < 200 ms), 8 kHz.

    The echo agent plays each utterance back after it ends and the caller's next words
    clear it (barge-in), so the heard audio is several pieces; the longest one is an
    uninterrupted echo to compare with what the caller said.
    """
    blocks = len(pcm) // 160
    rms = np.sqrt((pcm[: blocks * 160].reshape(blocks, 160) ** 2).mean(axis=1))
    loud = [int(i) for i in np.flatnonzero(rms > 327)]
    if not loud:
        return pcm[:0]
    pieces: list[tuple[int, int]] = []
    start = previous = loud[0]
    for index in loud[1:]:
        if index - previous > 10:
            pieces.append((start, previous))
            start = index
        previous = index
    pieces.append((start, previous))
    first, last = max(pieces, key=lambda piece: piece[1] - piece[0])
    return pcm[first * 160 : (last + 1) * 160]


async def _records(database_url: str, call_ids: list[str]) -> list[CallRecord]:
    engine = create_engine(database_url)
    try:
        ledger = Ledger(engine)
        return [await ledger.get_call(call_id) for call_id in call_ids]
    finally:
        await engine.dispose()


async def _json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_sigterm_drains_live_calls_refuses_new_ones_and_exits_0(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/gw.db"
    env = base_env(tmp_path, database_url)
    tenants = await seed(env, {"tw": ("twilio", None), "vg": ("vonage", None)}, migrate=True)
    speech, _ = to_carrier(load_speech(), "twilio")
    spoken = speech[:230] + silence("twilio", 3800)  # first phrase, then its echo plays
    gateway = GatewayProcess(env, tmp_path / "gateway.log")
    try:
        async with aiohttp.ClientSession() as http:
            await gateway.wait_up(http)
            tw_sid, vg_sid = new_call_id("twilio"), new_call_id("vonage")
            tw_answer = await call_answer(gateway, http, "twilio", tw_sid, to=tenants["tw"].number)
            vg_answer = await call_answer(gateway, http, "vonage", vg_sid, to=tenants["vg"].number)
            tw = await connect_media(gateway, http, "twilio", tw_sid, tw_answer)
            vg = await connect_media(gateway, http, "vonage", vg_sid, vg_answer)
            await tw.open()
            await vg.open()
            talking = asyncio.create_task(tw.send_frames(spoken))
            waiting = asyncio.create_task(vg.send_frames(silence("vonage", 60_000)))
            await asyncio.sleep(0.6)
            assert (await _json(http, f"{gateway.base}/healthz"))[1]["live_calls"] == 2

            gateway.terminate()
            ready: tuple[int, Any] = (0, None)
            for _ in range(40):  # "at once": well within the first probe interval
                ready = await _json(http, f"{gateway.base}/readyz")
                if ready[0] == 503:
                    break
                await asyncio.sleep(0.025)
            refused = await call_answer(
                gateway, http, "twilio", new_call_id("twilio"), to=tenants["tw"].number
            )
            async with http.get(f"{gateway.base}/metrics") as response:
                draining_metrics = await response.text()

            assert await talking == len(spoken)  # the caller was never cut off
            await tw.hang_up()
            await asyncio.sleep(0.3)
            assert gateway.proc.poll() is None  # still draining: the Vonage call is live
            gateway.terminate()  # second signal: hang up the rest
            await asyncio.wait_for(vg.closed.wait(), timeout=10)
            waiting.cancel()
            code = await gateway.exit_code()
    finally:
        gateway.close()

    assert ready == (503, {"status": "not_ready", "checks": {"draining": "yes"}})
    assert refused.status == 503
    assert "gateway_draining 1.0" in draining_metrics
    assert code == 0, gateway.logs()[-3000:]
    tw_record, vg_record = await _records(
        database_url, [call_id_for("twilio", tw_sid), call_id_for("vonage", vg_sid)]
    )
    assert (tw_record.status, tw_record.end_reason) == (CallStatus.COMPLETED, "caller_hangup")
    assert vg_record.end_reason == "drain"
    assert vg_record.billable_units is not None
    assert vg_record.billable_units >= 1
    assert vg_record.audio_ms > 0
    # The echo the Twilio caller heard during the drain is its own speech.
    heard = _longest_utterance(to_pcm(bytes(tw.heard), "twilio"))
    assert len(heard) >= 8000 * 0.3  # the pieces are short: the caller talks over them
    score = best_correlation(to_pcm(b"".join(spoken), "twilio"), heard)
    assert score >= MIN_CORRELATION, f"correlation {score:.3f}"
    lines = gateway.log_lines()
    assert any("second stop signal" in str(line["msg"]) for line in lines)
    assert any(line.get("call_id") == vg_record.id for line in lines)


async def test_the_drain_deadline_hangs_up_the_rest_billed_and_exits_0(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/gw.db"
    env = base_env(tmp_path, database_url, RYMI_DRAIN_DEADLINE_S="1")
    tenants = await seed(env, {"vg": ("vonage", None)}, migrate=True)
    gateway = GatewayProcess(env, tmp_path / "gateway.log")
    try:
        async with aiohttp.ClientSession() as http:
            await gateway.wait_up(http)
            sid = new_call_id("vonage")
            answer = await call_answer(gateway, http, "vonage", sid, to=tenants["vg"].number)
            call = await connect_media(gateway, http, "vonage", sid, answer)
            await call.open()
            sending = asyncio.create_task(call.send_frames(silence("vonage", 60_000)))
            await asyncio.sleep(0.5)
            gateway.terminate()  # one signal only: the deadline does the rest
            await asyncio.wait_for(call.closed.wait(), timeout=10)
            sending.cancel()
            code = await gateway.exit_code()
    finally:
        gateway.close()
    assert code == 0, gateway.logs()[-3000:]
    (record,) = await _records(database_url, [call_id_for("vonage", sid)])
    assert record.end_reason == "drain"
    assert record.billable_units == 1
    assert 1000 <= record.audio_ms < 5000  # ~0.5 s before the signal + the 1 s deadline
    assert any("drain deadline" in str(line["msg"]) for line in gateway.log_lines())
