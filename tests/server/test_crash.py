"""A gateway process killed mid-call (SIGKILL): its slot comes back, the reaper bills it.

A real ``rymi-gateway serve`` subprocess on Redis coordination and a temp SQLite file;
the test plays a Twilio call against it, waits for usage checkpoints, kills it, then
checks from the outside: the lease expires within its TTL (Redis), and a reaper pass
finalizes the call as ``gateway_lost`` with the audio of its last checkpoint.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.config import Settings
from gateway.server.answer import call_id_for
from gateway.store.coordination import open_coordination
from gateway.store.models import CallStatus, TwilioCredentials
from gateway.store.reaper import Reaper
from gateway.store.secrets import Secret
from gateway.store.sql_state import SqlState
from tests.helpers.redis_server import free_port
from tests.server.harness import (
    CREDENTIAL,
    NUMBER,
    TWILIO_ACCOUNT,
    GatewayUnderTest,
    call_answer,
    connect_media,
    new_call_id,
    silence,
)

LEASE_TTL_S = 3


async def _seed(settings: Settings) -> str:
    state = await SqlState.open(settings, migrate=True)
    try:
        directory = state.directory
        tenant = await directory.create_tenant("crash", 1)
        await directory.connect_carrier(
            tenant.id, TwilioCredentials(TWILIO_ACCOUNT, Secret(CREDENTIAL))
        )
        agent = await directory.create_agent(tenant.id, name="echo", published=True)
        await directory.add_number(tenant.id, NUMBER, agent.id)
        await state.ledger.top_up(tenant.id, 1_000_000)
        return tenant.id
    finally:
        await state.close()


async def _wait_http(
    url: str, http: aiohttp.ClientSession, proc: asyncio.subprocess.Process
) -> None:
    for _ in range(200):
        assert proc.returncode is None, "rymi-gateway serve exited early"
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("rymi-gateway serve did not come up")


@pytest.mark.redis
async def test_killed_gateway_frees_slot_and_reaper_bills_last_checkpoint(
    tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    namespace = "crash" + os.urandom(4).hex()
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RYMI_")},
        "RYMI_DATA_DIR": str(tmp_path),
        "RYMI_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/gw.db",
        "RYMI_MASTER_KEYS": key,
        "RYMI_REDIS_URL": redis_url,
        "RYMI_REDIS_NAMESPACE": namespace,
        "RYMI_PORT": str(port),
        "RYMI_CHECKPOINT_INTERVAL_S": "1",
        "RYMI_REAPER_STALE_AFTER_S": "3",
        "RYMI_REAPER_INTERVAL_S": "3600",  # the test runs the reaper pass itself
        "RYMI_LEASE_TTL_S": str(LEASE_TTL_S),
        "RYMI_LEASE_RENEW_INTERVAL_S": "1",
    }
    settings = Settings.from_env(env)
    tenant_id = await _seed(settings)
    # A fresh namespace starts with the recovery barrier closed (Redis "lost its data");
    # open it at once, as a running fleet's epoch would be.
    coordination = open_coordination(redis_url, namespace=namespace, barrier=0)
    await coordination.renew_all(ttl=LEASE_TTL_S)
    command = [sys.executable, "-m", "gateway", "serve", "--no-demo"]
    log_file = (tmp_path / "serve.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    try:
        async with aiohttp.ClientSession() as http:
            await _wait_http(f"{settings.base_url}/healthz", http, proc)
            gw = GatewayUnderTest(settings, None, None)  # type: ignore[arg-type]
            sid = new_call_id("twilio")
            answer = await call_answer(gw, http, "twilio", sid)
            assert answer.media_url is not None, answer.headers.get("X-Rymi-Refusal")
            call = await connect_media(gw, http, "twilio", sid, answer)
            await call.open()
            await call.send_frames(silence("twilio", 2600))  # checkpoints at ~1 s and ~2 s
            assert await coordination.active_calls(tenant_id) == 1
            proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.wait_for(proc.wait(), timeout=5)
            for _ in range(100):
                if not await coordination.active_calls(tenant_id):
                    break
                await asyncio.sleep(0.1)
            freed_after = time.monotonic() - killed
            await call.ws.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log_file.close()
        await coordination.close()
    assert freed_after <= LEASE_TTL_S + 1.0  # the slot came back within the lease TTL

    state = await SqlState.open(settings)
    try:
        ledger = state.ledger
        call_id = call_id_for("twilio", sid)
        live = await ledger.get_call(call_id)
        assert live.status is CallStatus.LIVE
        assert live.checkpoint_at_ms is not None
        checkpointed = live.audio_ms
        assert 900 <= checkpointed <= 2700
        await asyncio.sleep(max(0.0, live.checkpoint_at_ms / 1000 + 3.2 - time.time()))
        reaped = await Reaper(ledger, stale_after_ms=3000).reap_once()
        assert [r.id for r in reaped] == [call_id]
        final = await ledger.get_call(call_id)
    finally:
        await state.close()
    assert (final.status, final.end_reason) == (CallStatus.FAILED, "gateway_lost")
    assert final.audio_ms == checkpointed
    assert final.billable_units == 1
