"""Admission and media-socket limits, end to end.

Refusals write nothing; rejected sockets bill nothing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import CloseCode
from gateway.reasons import RefusalReason
from gateway.server.answer import call_id_for, media_url
from gateway.store.models import CallStatus
from tests.server.harness import (
    CREDENTIAL,
    GatewayUnderTest,
    call_answer,
    connect_media,
    final_record,
    new_call_id,
    open_calls,
    running_gateway,
    silence,
)


async def _calls(gw: GatewayUnderTest, tenant_id: str) -> int:
    return len(await gw.engine.state.ledger.list_calls(tenant_id))


async def test_concurrency_limit_refuses_with_busy(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        tenant, _ = await gw.tenant("twilio", limit=1)
        first = await call_answer(gw, http, "twilio", new_call_id("twilio"))
        assert first.media_url is not None
        second = await call_answer(gw, http, "twilio", new_call_id("twilio"))
        assert second.status == 200
        assert second.headers["X-Rymi-Refusal"] == RefusalReason.QUOTA_CONCURRENT_CALLS.value
        assert b'<Reject reason="busy"' in second.body
        assert await _calls(gw, tenant.id) == 1
        assert await gw.engine.coordination.active_calls(tenant.id) == 1


@pytest.mark.parametrize("carrier", ["plivo", "vonage"])
async def test_balance_depleted_refuses_and_writes_nothing(tmp_path: Path, carrier: str) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        tenant, _ = await gw.tenant(carrier, credit_micros=0)
        answer = await call_answer(gw, http, carrier, new_call_id(carrier))
        assert answer.headers["X-Rymi-Refusal"] == RefusalReason.BALANCE_DEPLETED.value
        expected = b"[]" if carrier == "vonage" else b'<Hangup reason="rejected"'
        assert expected in answer.body
        assert await _calls(gw, tenant.id) == 0
        assert await gw.engine.coordination.active_calls(tenant.id) == 0


@pytest.mark.parametrize("carrier", ["twilio", "plivo", "vonage"])
async def test_bad_signature_is_403_and_writes_nothing(tmp_path: Path, carrier: str) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        tenant, _ = await gw.tenant(carrier)
        answer = await call_answer(
            gw, http, carrier, new_call_id(carrier), credential="not-the-tenant-token-" + "0" * 16
        )
        assert answer.status == 403
        assert await _calls(gw, tenant.id) == 0
        assert await gw.engine.coordination.active_calls(tenant.id) == 0


async def test_unknown_number_and_draft_agent_are_refused(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        await gw.tenant("twilio", published=False)
        unknown = await call_answer(gw, http, "twilio", new_call_id("twilio"), to="+15555550999")
        assert unknown.headers["X-Rymi-Refusal"] == RefusalReason.NUMBER_NOT_FOUND.value
        draft = await call_answer(gw, http, "twilio", new_call_id("twilio"))
        assert draft.headers["X-Rymi-Refusal"] == RefusalReason.AGENT_NOT_PUBLISHED.value


async def test_max_duration_hangs_up_at_the_limit(tmp_path: Path) -> None:
    # The gateway-wide cap (RYMI_MAX_CALL_DURATION_CAP_S) gives a short limit; the
    # agent's own maxCallDuration must stay within 30-7200 s.
    async with (
        running_gateway(tmp_path, max_call_duration_cap_s=2, duration_warning_s=1) as gw,
        aiohttp.ClientSession() as http,
    ):
        await gw.tenant("twilio")
        sid = new_call_id("twilio")
        answer = await call_answer(gw, http, "twilio", sid)
        call = await connect_media(gw, http, "twilio", sid, answer)
        await call.open()
        began = time.monotonic()
        sender = asyncio.create_task(call.send_frames(silence("twilio", 5000)))
        await asyncio.wait_for(call.closed.wait(), timeout=5)
        closed_after = time.monotonic() - began
        sender.cancel()
        record = await final_record(gw, "twilio", sid)
        await asyncio.wait_for(gw.api.seen.wait(), timeout=2)
        lines = [line.text for line in await gw.engine.state.ledger.transcript(record.id)]
    assert 2.0 - 0.1 <= closed_after <= 2.0 + 1.0
    assert record.end_reason == "max_duration"
    method, path, body = gw.api.requests[0]
    assert (method, body) == ("POST", b"Status=completed")
    assert path.endswith(f"/Calls/{sid}.json")
    assert any("s left" in line for line in lines)  # the echo agent logs the warning


async def _expect_close(ws: aiohttp.ClientWebSocketResponse, code: int) -> None:
    msg = await asyncio.wait_for(ws.receive(), timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == code


async def test_token_reuse_expired_wrong_call_and_missing_start(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        tenant, _ = await gw.tenant("twilio")
        sid_a, sid_b = new_call_id("twilio"), new_call_id("twilio")
        answer_a = await call_answer(gw, http, "twilio", sid_a)
        answer_b = await call_answer(gw, http, "twilio", sid_b)

        # Wrong call: A's token, but the carrier's start is for call B.
        wrong = await connect_media(gw, http, "twilio", sid_b, answer_a)
        start = wrong.side.open()[1]
        assert isinstance(start, str)
        await wrong.ws.send_str(start)
        await _expect_close(wrong.ws, CloseCode.POLICY_VIOLATION)

        # Reuse: A's token has been used once already.
        reused = await connect_media(gw, http, "twilio", sid_a, answer_a)
        await _expect_close(reused.ws, CloseCode.POLICY_VIOLATION)

        # Expired: a token minted two minutes ago for call B.
        old = gw.engine.tokens.issue(
            provider="twilio",
            call_id=call_id_for("twilio", sid_b),
            tenant_id=tenant.id,
            now=time.time() - 120,
        )
        expired = await connect_media(
            gw, http, "twilio", sid_b, answer_b, media_url=media_url(gw.engine, "twilio", old)
        )
        await _expect_close(expired.ws, CloseCode.POLICY_VIOLATION)

        # Missing start: B's valid token, then nothing: closed with 4000 after 1 s.
        silent = await connect_media(gw, http, "twilio", sid_b, answer_b)
        await _expect_close(silent.ws, CloseCode.START_TIMEOUT)
        record_b = await final_record(gw, "twilio", sid_b)
        assert (record_b.status, record_b.end_reason) == (CallStatus.FAILED, "start_timeout")
        assert record_b.audio_ms == 0
        assert record_b.billable_units == 0
        assert await gw.engine.state.ledger.balance_micros(tenant.id) == 5_000_000


async def test_bad_upgrade_signature_is_refused_before_the_upgrade(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        await gw.tenant("twilio")
        sid = new_call_id("twilio")
        answer = await call_answer(gw, http, "twilio", sid)
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await connect_media(gw, http, "twilio", sid, answer, credential="wrong" + CREDENTIAL)
        assert raised.value.status == 403
        # The token was not consumed: the real carrier can still connect.
        call = await connect_media(gw, http, "twilio", sid, answer)
        await call.open()
        await call.send_frames(silence("twilio", 200))
        await call.hang_up()
        record = await final_record(gw, "twilio", sid)
        assert record.end_reason == "caller_hangup"


async def test_oversized_message_closes_only_that_socket(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        await gw.tenant("twilio")
        sids, calls = await open_calls(gw, http, "twilio", 2)
        bad, good = calls
        sender = asyncio.create_task(good.send_frames(silence("twilio", 1500)))
        await bad.ws.send_str("x" * (gw.settings.media_max_message_bytes + 1))
        await asyncio.wait_for(bad.closed.wait(), timeout=3)
        assert bad.ws.close_code == CloseCode.MESSAGE_TOO_BIG
        assert not good.ws.closed
        await sender
        await good.hang_up()
        bad_record = await final_record(gw, "twilio", sids[0])
        good_record = await final_record(gw, "twilio", sids[1])
    assert (bad_record.status, bad_record.end_reason) == (CallStatus.FAILED, "carrier_error")
    assert good_record.end_reason == "caller_hangup"


async def test_a_socket_that_breaks_the_protocol_before_its_start_is_unbilled(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        tenant, _ = await gw.tenant("twilio")
        sid = new_call_id("twilio")
        answer = await call_answer(gw, http, "twilio", sid)
        call = await connect_media(gw, http, "twilio", sid, answer)
        # Invalid UTF-8 in a text frame (RFC 6455 §8.1) instead of the carrier's start.
        await call.ws.send_frame(b'{"event":"\xff"}', aiohttp.WSMsgType.TEXT)
        await _expect_close(call.ws, CloseCode.INVALID_PAYLOAD)
        record = await final_record(gw, "twilio", sid)
        balance = await gw.engine.state.ledger.balance_micros(tenant.id)
    assert (record.status, record.end_reason) == (CallStatus.FAILED, "carrier_error")
    assert (record.audio_ms, record.billable_units) == (0, 0)
    assert balance == 5_000_000
