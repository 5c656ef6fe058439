"""The ops layer wired into the real call engine: metrics move as calls say, readiness,
and the log/metrics canary.

Every figure is read back from the gateway's own ``GET /metrics`` (parsed with
prometheus-client's parser), after real calls over loopback sockets played by the
carrier adapters' carrier side.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import CloseCode
from gateway.log import configure_logging
from gateway.metering import Role
from gateway.metrics import TenantLabels
from gateway.ops import OpsSettings
from gateway.server.answer import call_id_for
from gateway.server.meter import SAMPLE_EVERY
from gateway.store.models import TwilioCredentials
from gateway.store.secrets import Secret
from tests.ops.promtext import Samples, parse, value
from tests.server.agents import AGENT_SECRET, RecordingAgent, agent_server
from tests.server.harness import (
    TWILIO_ACCOUNT,
    GatewayUnderTest,
    call_answer,
    connect_media,
    final_record,
    load_speech,
    new_call_id,
    running_gateway,
    silence,
    to_carrier,
)


async def _scrape(gw: GatewayUnderTest, http: aiohttp.ClientSession) -> tuple[str, Samples]:
    async with http.get(f"{gw.base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return text, parse(text)


async def test_a_real_call_moves_the_metrics_as_it_says(tmp_path: Path) -> None:
    frames, _ = to_carrier(load_speech(), "twilio")
    sent = frames[:150] + silence("twilio", 1000)  # 3 s of speech, then 1 s for the echo
    # Per-tenant series are opt-in: a listed tenant gets its own, everyone else is "other".
    ops = OpsSettings(metrics_tenants=TenantLabels(frozenset({"listed-tenant"})))
    async with running_gateway(tmp_path, ops=ops) as gw, aiohttp.ClientSession() as http:
        await gw.tenant("twilio", role=Role.SPECIALIST)
        sid = new_call_id("twilio")
        answer = await call_answer(gw, http, "twilio", sid)
        call = await connect_media(gw, http, "twilio", sid, answer)
        await call.open()
        assert await call.send_frames(sent) == len(sent)
        _, live = await _scrape(gw, http)
        await call.hang_up()
        record = await final_record(gw, "twilio", sid)
        _, samples = await _scrape(gw, http)

    assert value(live, "gateway_calls_active", carrier="twilio") == 1
    assert value(live, "gateway_tenant_calls_active", tenant="other") == 1
    assert value(live, "gateway_tenant_calls_active", tenant="listed-tenant") == 0
    assert value(samples, "gateway_calls_active", carrier="twilio") == 0
    assert value(samples, "gateway_calls_total", carrier="twilio", outcome="caller_hangup") == 1
    assert value(samples, "gateway_calls_total", carrier="twilio", outcome="agent_error") == 0
    # Every caller frame the carrier sent was read (the stop came after them, in order).
    assert value(samples, "gateway_frames_total", carrier="twilio", direction="in") == len(sent)
    heard = len(call.audio_frames())
    out = value(samples, "gateway_frames_total", carrier="twilio", direction="out")
    assert heard > 0, out  # the echo came back
    assert abs(out - heard) <= 3  # frames written while the socket closed may be lost
    # Billing figures equal the final record, by the agent's role.
    assert record.billable_units is not None
    assert record.billable_units >= 1
    assert value(samples, "gateway_billed_units_total", role="specialist") == record.billable_units
    assert value(samples, "gateway_billed_units_total", role="operator") == 0
    billed_s = value(samples, "gateway_billable_seconds_total", role="specialist")
    assert billed_s == pytest.approx(record.audio_ms / 1000)
    tenant_s = value(samples, "gateway_tenant_billable_seconds_total", tenant="other")
    assert tenant_s == pytest.approx(billed_s)
    assert value(samples, "gateway_tenant_calls_active", tenant="other") == 0
    # The lease went admit -> claim -> release, once each.
    assert value(samples, "gateway_lease_operations_total", op="admit", outcome="ok") == 1
    assert value(samples, "gateway_lease_operations_total", op="claim", outcome="claimed") == 1
    assert value(samples, "gateway_lease_operations_total", op="release", outcome="ok") == 1
    assert value(samples, "gateway_agent_connect_seconds_count") == 1
    # Sampled timings: one frame in SAMPLE_EVERY, both directions, and the pacer's releases.
    latency_in = value(samples, "gateway_added_latency_seconds_count", direction="in")
    assert 1 <= latency_in <= len(sent) // SAMPLE_EVERY
    assert value(samples, "gateway_added_latency_seconds_count", direction="out") >= 1
    assert 1 <= value(samples, "gateway_pacing_lateness_seconds_count") <= out
    assert value(samples, "gateway_event_loop_lag_seconds_count") >= 1
    assert value(samples, "gateway_draining") == 0
    assert value(samples, "gateway_websocket_rejections_total", close_code="1008") == 0


async def test_refusals_and_rejected_sockets_are_counted_by_reason(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        await gw.tenant("twilio", credit_micros=0)
        broke = await call_answer(gw, http, "twilio", new_call_id("twilio"))
        await gw.tenant("plivo", limit=1, number="+15555550199")
        first = await call_answer(gw, http, "plivo", new_call_id("plivo"), to="+15555550199")
        second = await call_answer(gw, http, "plivo", new_call_id("plivo"), to="+15555550199")
        async with http.post(f"{gw.base}/inbound/twilio", data={"CallSid": "CAx"}) as response:
            not_an_answer = response.status  # no To, no signature: refused before a lookup
        async with http.ws_connect(f"{gw.base}/media/twilio/not-a-token") as ws:
            await ws.receive()
            bad_token_close = ws.close_code
        async with http.get(f"{gw.base}/readyz") as response:
            ready = (response.status, await response.json())
        _, samples = await _scrape(gw, http)

    assert broke.headers["X-Rymi-Refusal"] == "balance_depleted"
    assert first.media_url is not None
    assert second.headers["X-Rymi-Refusal"] == "quota_exceeded.concurrent_calls"
    assert bad_token_close == CloseCode.POLICY_VIOLATION
    refusals = "gateway_call_refusals_total"
    assert value(samples, refusals, reason="balance_depleted") == 1
    assert value(samples, refusals, reason="quota_exceeded.concurrent_calls") == 1
    assert value(samples, refusals, reason="number_not_found") == 0
    assert value(samples, "gateway_lease_operations_total", op="admit", outcome="ok") == 1
    assert value(samples, "gateway_lease_operations_total", op="admit", outcome="refused") == 1
    assert value(samples, "gateway_websocket_rejections_total", close_code="1008") == 1
    # Every answer request is timed, by carrier and by how it was answered.
    assert not_an_answer == 400
    answers = "gateway_answer_seconds_count"
    assert value(samples, answers, carrier="twilio", outcome="refused") == 1
    assert value(samples, answers, carrier="twilio", outcome="rejected") == 1
    assert value(samples, answers, carrier="twilio", outcome="answered") == 0
    assert value(samples, answers, carrier="plivo", outcome="answered") == 1
    assert value(samples, answers, carrier="plivo", outcome="refused") == 1
    assert value(samples, answers, carrier="vonage", outcome="error") == 0
    assert value(samples, "gateway_answer_seconds_sum", carrier="plivo", outcome="answered") > 0
    assert ready == (
        200,
        {"status": "ready", "checks": {"draining": "no", "coordination": "ok", "database": "ok"}},
    )


async def test_readiness_fails_when_the_database_is_gone_but_liveness_holds(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        await gw.engine.state.engine.dispose()
        (tmp_path / "gw.db").unlink()
        (tmp_path / "gw.db").mkdir()  # a directory: SQLite cannot open it
        async with http.get(f"{gw.base}/readyz") as response:
            ready = (response.status, await response.json())
        async with http.get(f"{gw.base}/healthz") as response:
            alive = (response.status, await response.json())
        answer = await call_answer(gw, http, "twilio", new_call_id("twilio"))
        _, samples = await _scrape(gw, http)
        (tmp_path / "gw.db").rmdir()
    assert answer.status == 500  # the number lookup failed: the answer is timed as an error
    assert value(samples, "gateway_answer_seconds_count", carrier="twilio", outcome="error") == 1
    assert ready[0] == 503
    assert ready[1]["checks"]["database"] == "fail"
    assert ready[1]["checks"]["coordination"] == "ok"
    assert alive == (200, {"status": "ok", "live_calls": 0})


# -- the canary: secrets never reach the logs or /metrics --------------------------------

CANARY_CARRIER = "canary-carrier-" + secrets.token_hex(12)
CANARY_ADMIN = "canary-admin-" + secrets.token_hex(16)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """JSON logs at debug into a buffer; the root logger is put back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    names = ("gateway", "aiosqlite", "asyncio", "sqlalchemy", "alembic", "redis", "hpack")
    levels = {name: logging.getLogger(name).level for name in (*names, "aiohttp.access")}
    buffer = io.StringIO()
    configure_logging("json", "debug", stream=buffer)
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def test_canary_secrets_never_reach_logs_or_metrics(
    tmp_path: Path, json_logs: io.StringIO
) -> None:
    canaries = (CANARY_CARRIER, CANARY_ADMIN, AGENT_SECRET)
    async with (
        agent_server(RecordingAgent()) as agent,
        running_gateway(tmp_path, admin_token=CANARY_ADMIN) as gw,
        aiohttp.ClientSession() as http,
    ):
        tenant, created = await gw.tenant(
            "twilio", pipeline=agent.url + "/x", pipeline_secret=Secret(AGENT_SECRET)
        )
        directory = gw.engine.state.directory
        await directory.update_agent(
            tenant.id,
            created.id,
            pipeline=f"{agent.url}/{created.id}",
            pipeline_secret=Secret(AGENT_SECRET),
        )
        await directory.connect_carrier(
            tenant.id, TwilioCredentials(TWILIO_ACCOUNT, Secret(CANARY_CARRIER))
        )
        # A forged answer (logged as a bad signature), an operator API call, a real call.
        forged = await call_answer(gw, http, "twilio", new_call_id("twilio"), credential="x" * 32)
        async with http.post(
            f"{gw.base}/v1/admin/tenants/{tenant.id}/top-up",
            json={"amount_micros": 1_000_000},
            headers={"Authorization": f"Bearer {CANARY_ADMIN}"},
        ) as response:
            topped = response.status
        sid = new_call_id("twilio")
        answer = await call_answer(gw, http, "twilio", sid, credential=CANARY_CARRIER)
        call = await connect_media(gw, http, "twilio", sid, answer, credential=CANARY_CARRIER)
        await call.open()
        await call.send_frames(silence("twilio", 1000))
        await call.hang_up()
        record = await final_record(gw, "twilio", sid)
        metrics_text, _ = await _scrape(gw, http)

    assert forged.status == 403
    assert topped < 500
    assert record.end_reason == "caller_hangup"
    assert agent.frames > 0  # the agent link (signed with the agent secret) carried audio
    logs = json_logs.getvalue()
    lines = [json.loads(line) for line in logs.splitlines()]
    call_id = call_id_for("twilio", sid)
    # bind_call: the call's lines (answer, media, runner, ending) carry its ids.
    mine = [line for line in lines if line.get("call_id") == call_id]
    assert {line["logger"] for line in mine} >= {"gateway.answer", "gateway.call"}
    assert all(line.get("tenant_id") == tenant.id for line in mine)
    assert any("final" in str(line["msg"]) for line in mine)
    for canary in canaries:
        assert canary not in logs
        assert canary not in metrics_text
