"""A fleet on one host: real gateway processes sharing Redis and PostgreSQL.

Gateway A is ``rymi-gateway serve --workers 2`` (a supervisor and two workers on one
port, SO_REUSEPORT, multiprocess metrics); gateway B is a plain ``serve`` on another
port. A call is answered by B and its media stream goes to A; while it is live the
tenant's limit of one call refuses new answers on both; every process drains and exits
0 on SIGTERM.

SQLite cannot be shared by processes (``check_workers`` refuses it), so this needs a
PostgreSQL server: ``DATABASE_URL`` or the local ``postgres@127.0.0.1:5432``. Without
one the test is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.server.answer import call_id_for
from gateway.store.coordination import open_coordination
from gateway.store.ledger import Ledger
from gateway.store.models import CallStatus
from gateway.store.sql.engine import create_engine
from gateway.store.sql.migrate import upgrade
from tests.ops.gateway_proc import GatewayProcess, base_env, seed
from tests.ops.promtext import parse, value
from tests.server.harness import (
    call_answer,
    connect_media,
    load_speech,
    new_call_id,
    silence,
    to_carrier,
)

LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def _admin(admin_url: str, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    engine = create_async_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 3}
    )
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@pytest.fixture
async def fleet_database() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for this test, or a loud skip."""
    admin_url = os.environ.get("DATABASE_URL") or LOCAL_POSTGRES
    shown = make_url(admin_url).render_as_string(hide_password=True)
    name = f"rymi_fleet_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        await _admin(admin_url, f'CREATE DATABASE "{name}"')
    except (OSError, TimeoutError, sa.exc.DBAPIError) as exc:
        pytest.skip(
            f"FLEET TEST SKIPPED: needs PostgreSQL (two processes cannot share SQLite); "
            f"no server at {shown} ({type(exc).__name__}); set DATABASE_URL"
        )
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade(url)  # as `rymi-gateway db upgrade` does once per release
        yield url
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _metrics(http: aiohttp.ClientSession, gateway: GatewayProcess) -> str:
    async with http.get(f"{gateway.base}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_answer_on_one_process_stream_to_another_and_the_limit_holds_across(
    tmp_path: Path, fleet_database: str, redis_url: str
) -> None:
    namespace = "fleet" + secrets.token_hex(4)
    env = base_env(
        tmp_path, fleet_database, RYMI_REDIS_URL=redis_url, RYMI_REDIS_NAMESPACE=namespace
    )
    tenants = await seed(env, {"tw": ("twilio", 1)}, migrate=False)
    # A fresh namespace starts with the recovery barrier closed (Redis "lost its data");
    # open it at once, as a running fleet's epoch would be (see tests/server/test_crash.py).
    coordination = open_coordination(redis_url, namespace=namespace, barrier=0)
    await coordination.renew_all(ttl=5)
    await coordination.close()
    number = tenants["tw"].number
    speech, _ = to_carrier(load_speech(), "twilio")
    a = GatewayProcess(env, tmp_path / "a.log", "--workers", "2")
    b = GatewayProcess(env, tmp_path / "b.log")
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(a.wait_up(http), b.wait_up(http))
            sid = new_call_id("twilio")
            answer = await call_answer(b, http, "twilio", sid, to=number)
            assert answer.media_url is not None
            assert answer.media_url.startswith("ws://")
            b_host, a_host = b.base.removeprefix("http"), a.base.removeprefix("http")
            on_a = answer.media_url.replace(b_host, a_host)
            assert on_a != answer.media_url
            call = await connect_media(a, http, "twilio", sid, answer, media_url=on_a)
            await call.open()
            sender = asyncio.create_task(call.send_frames(speech[:120] + silence("twilio", 2500)))
            await asyncio.sleep(0.5)
            over_b = await call_answer(b, http, "twilio", new_call_id("twilio"), to=number)
            over_a = await call_answer(a, http, "twilio", new_call_id("twilio"), to=number)
            await sender
            await call.hang_up()
            await asyncio.sleep(0.5)  # the ending sequence: finalize, release
            metrics_a, metrics_b = parse(await _metrics(http, a)), parse(await _metrics(http, b))
            a.terminate()
            b.terminate()
            codes = await asyncio.gather(a.exit_code(), b.exit_code())
    finally:
        a.close()
        b.close()

    assert list(codes) == [0, 0], (a.logs()[-2000:], b.logs()[-2000:])
    assert len(call.audio_frames()) > 0  # the echo came back through process A
    busy = "quota_exceeded.concurrent_calls"
    assert over_b.headers.get("X-Rymi-Refusal") == busy
    assert over_a.headers.get("X-Rymi-Refusal") == busy
    engine = create_engine(fleet_database)
    try:
        record = await Ledger(engine).get_call(call_id_for("twilio", sid))
    finally:
        await engine.dispose()
    assert (record.status, record.end_reason) == (CallStatus.COMPLETED, "caller_hangup")
    assert record.billable_units == 1
    # A's /metrics (whichever worker answered) sums both workers: the call and a refusal.
    ended = ("gateway_calls_total", {"carrier": "twilio", "outcome": "caller_hangup"})
    assert value(metrics_a, ended[0], **ended[1]) == 1
    assert value(metrics_a, "gateway_call_refusals_total", reason=busy) == 1
    assert value(metrics_b, "gateway_call_refusals_total", reason=busy) == 1
    assert value(metrics_b, ended[0], **ended[1]) == 0
    assert value(metrics_a, "gateway_billed_units_total", role="operator") == 1
