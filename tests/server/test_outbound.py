"""An outbound call end to end: ``POST /v1/calls`` on the gateway's own ``/v1``, the
carrier's REST API (a local stand-in) places it, the test plays the carrier answering
(a signed answer request to the URL we gave it, ``Direction=outbound-api``), the media
socket exchanges audio with the echo agent, the callee hangs up, and the CDR is an
outbound call billed like any other. Admission is shared with inbound calls.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import carriers
from gateway.metering import RATE_PER_MINUTE_MICROS, Role
from gateway.store.models import CallRecord, CallStatus, Direction, Tenant, TwilioCredentials
from gateway.store.secrets import Secret
from tests.api.carriers import TWILIO_SID, TWILIO_TOKEN, StandIns, make_carriers_app
from tests.helpers.redis_server import free_port
from tests.server.harness import (
    NUMBER,
    Answer,
    GatewayUnderTest,
    call_answer,
    connect_media,
    live_slots_once_released,
    load_speech,
    new_call_id,
    parse_answer,
    running_gateway,
    silence,
    to_carrier,
)

CALLEE = "+14155550188"


@pytest.fixture
async def stand_ins() -> AsyncIterator[tuple[StandIns, str]]:
    """The carriers' REST API stand-ins on a loopback port, and their base URL."""
    state = StandIns()
    runner = web.AppRunner(make_carriers_app(state))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _dialing_tenant(gw: GatewayUnderTest, limit: int | None) -> tuple[Tenant, str, str]:
    """A Twilio tenant (the stand-in's account), its echo agent and a secret key."""
    tenant, agent = await gw.tenant("twilio", limit=limit, role=Role.SPECIALIST)
    directory = gw.engine.state.directory
    await directory.connect_carrier(tenant.id, TwilioCredentials(TWILIO_SID, Secret(TWILIO_TOKEN)))
    key = await directory.create_api_key(tenant.id, label="server")
    return tenant, agent.id, key.plaintext.reveal()


async def _dial(
    gw: GatewayUnderTest, http: aiohttp.ClientSession, key: str, agent_id: str
) -> tuple[int, dict[str, Any]]:
    body = {"agent_id": agent_id, "participants": [{"transport": "pstn", "identity": CALLEE}]}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(f"{gw.base}/v1/calls", json=body, headers=headers) as response:
        return response.status, await response.json()


async def _carrier_answers(
    http: aiohttp.ClientSession,
    url: str,
    call_sid: str,
    *,
    direction: str = "outbound-api",
    caller: str = NUMBER,
    called: str = CALLEE,
) -> Answer:
    """Twilio requesting an answer URL (by default: our outbound call's callee picked
    up), signed with the stand-in account's token."""
    params = {
        "CallSid": call_sid,
        "AccountSid": TWILIO_SID,
        "From": caller,
        "To": called,
        "Direction": direction,
        "CallStatus": "in-progress",
    }
    request = carriers.get("twilio").sign_answer_request(
        url, params, TWILIO_TOKEN, now=time.time(), nonce=secrets.token_hex(8)
    )
    async with http.request(
        request.method, request.url, headers=dict(request.headers), data=request.body
    ) as response:
        return parse_answer("twilio", response.status, await response.read(), response.headers)


async def _final(gw: GatewayUnderTest, call_id: str) -> CallRecord:
    for _ in range(200):
        record = await gw.engine.state.ledger.get_call(call_id)
        if record.final:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError("call was never finalized")


async def test_outbound_call_end_to_end(tmp_path: Path, stand_ins: tuple[StandIns, str]) -> None:
    state, carrier_url = stand_ins
    frames, _ = to_carrier(load_speech(), "twilio")
    async with (
        running_gateway(tmp_path, twilio_api_base_url=carrier_url) as gw,
        aiohttp.ClientSession() as http,
    ):
        tenant, agent_id, key = await _dialing_tenant(gw, limit=1)
        status, queued = await _dial(gw, http, key, agent_id)
        assert status == 202, queued
        call_id = queued["id"]
        [dialed] = state.dials
        assert dialed.fields["Url"] == f"{gw.base}/inbound/twilio?rymi_call={call_id}"

        # The queued call holds the tenant's only slot: an inbound call is refused busy.
        inbound = await _carrier_answers(
            http,
            f"{gw.base}/inbound/twilio",
            new_call_id("twilio"),
            direction="inbound",
            caller=CALLEE,
            called=NUMBER,
        )
        assert inbound.headers["X-Rymi-Refusal"] == "quota_exceeded.concurrent_calls"

        # The callee answers: the carrier requests the URL it was given.
        answer = await _carrier_answers(http, dialed.fields["Url"], dialed.call_id)
        assert answer.status == 200, answer.body
        assert "X-Rymi-Refusal" not in answer.headers
        assert answer.media_url is not None
        assert answer.parameters["from"] == CALLEE.lstrip("+")
        live = await gw.engine.state.ledger.get_call(call_id)
        assert (live.status, live.carrier_call_id) == (CallStatus.LIVE, dialed.call_id)

        call = await connect_media(
            gw, http, "twilio", dialed.call_id, answer, credential=TWILIO_TOKEN
        )
        await call.open()
        began = time.monotonic()
        await call.send_frames(frames)
        await call.send_frames(silence("twilio", 3000))
        ended = time.monotonic()
        await call.hang_up()
        record = await _final(gw, call_id)
        balance = await gw.engine.state.ledger.balance_micros(tenant.id)
        slots = await live_slots_once_released(gw, tenant.id)

    assert call.audio_frames(), "the echo agent sent nothing back"
    assert record.direction is Direction.OUTBOUND
    assert record.status is CallStatus.COMPLETED
    assert record.end_reason == "caller_hangup"
    assert (record.number, record.remote_number) == (NUMBER, CALLEE)
    assert record.agent_id == agent_id
    assert abs(record.audio_ms - (ended - began) * 1000) < 1500
    units = -(-record.audio_ms // 30_000)
    assert record.billable_units == units
    assert record.cost_micros == units * RATE_PER_MINUTE_MICROS[Role.SPECIALIST] // 2
    assert balance == 5_000_000 - record.cost_micros
    assert slots == 0


async def test_an_answered_inbound_call_makes_dialing_429(
    tmp_path: Path, stand_ins: tuple[StandIns, str]
) -> None:
    state, carrier_url = stand_ins
    async with (
        running_gateway(tmp_path, twilio_api_base_url=carrier_url) as gw,
        aiohttp.ClientSession() as http,
    ):
        tenant, agent = await gw.tenant("twilio", limit=1)
        key = await gw.engine.state.directory.create_api_key(tenant.id, label="server")
        inbound = await call_answer(gw, http, "twilio", new_call_id("twilio"))
        assert inbound.media_url is not None, inbound.body  # answered: its slot is reserved

        status, body = await _dial(gw, http, key.plaintext.reveal(), agent.id)

        assert (status, body["code"]) == (429, "quota_exceeded.concurrent_calls")
        assert state.dials == []
        assert [c.direction for c in await gw.engine.state.ledger.list_calls(tenant.id)] == [
            Direction.INBOUND
        ]


async def test_answer_requests_that_are_not_the_carriers_are_refused(
    tmp_path: Path, stand_ins: tuple[StandIns, str]
) -> None:
    state, carrier_url = stand_ins
    async with (
        running_gateway(tmp_path, twilio_api_base_url=carrier_url) as gw,
        aiohttp.ClientSession() as http,
    ):
        _, agent_id, key = await _dialing_tenant(gw, limit=None)
        status, queued = await _dial(gw, http, key, agent_id)
        assert status == 202
        [dialed] = state.dials
        url = dialed.fields["Url"]
        ledger = gw.engine.state.ledger
        # Another CallSid than the one the carrier created, an inbound direction, or a
        # call id that is not ours: refused, and the call stays queued.
        assert (await _carrier_answers(http, url, "CA" + "f" * 32)).status == 403
        wrong = await _carrier_answers(http, url, dialed.call_id, direction="inbound")
        assert wrong.status == 403
        other = url.replace(queued["id"], "00000000-0000-4000-8000-000000000000")
        assert (await _carrier_answers(http, other, dialed.call_id)).status == 404
        assert (await ledger.get_call(queued["id"])).status is CallStatus.QUEUED
        # A retried answer after the first gets the same reservation again.
        first = await _carrier_answers(http, url, dialed.call_id)
        again = await _carrier_answers(http, url, dialed.call_id)
        assert first.parameters["lt"] == again.parameters["lt"]
        assert (await ledger.get_call(queued["id"])).status is CallStatus.LIVE


async def test_a_canceled_call_is_refused_when_the_callee_answers_late(
    tmp_path: Path, stand_ins: tuple[StandIns, str]
) -> None:
    state, carrier_url = stand_ins
    async with (
        running_gateway(tmp_path, twilio_api_base_url=carrier_url) as gw,
        aiohttp.ClientSession() as http,
    ):
        tenant, agent_id, key = await _dialing_tenant(gw, limit=1)
        _, queued = await _dial(gw, http, key, agent_id)
        headers = {"Authorization": f"Bearer {key}"}
        async with http.post(f"{gw.base}/v1/calls/{queued['id']}/end", headers=headers) as r:
            assert (r.status, (await r.json())["status"]) == (200, "canceled")
        [dialed] = state.dials
        assert state.cancels == [("twilio", dialed.call_id, {"Status": "canceled"})]

        late = await _carrier_answers(http, dialed.fields["Url"], dialed.call_id)

        assert late.headers["X-Rymi-Refusal"] == "call_not_queued"
        assert late.media_url is None
        record = await gw.engine.state.ledger.get_call(queued["id"])
        assert (record.status, record.cost_micros) == (CallStatus.CANCELED, 0)
        assert await gw.engine.coordination.active_calls(tenant.id) == 0
