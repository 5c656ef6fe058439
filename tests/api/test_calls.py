"""``/v1/calls``: records, live calls, transcripts, and ending a call on its instance."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp
import pytest
from rymi import Rymi, RymiError

from gateway.metering import Role
from gateway.store.coordination import CallCommand, Command
from gateway.store.models import CallEnd, CallStart, CallStatus, TranscriptLine
from tests.api.conftest import Account, ApiServer
from tests.store.conftest import new_call_id, random_number

T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z, in ms


def sdk(server: ApiServer, account: Account) -> Rymi:
    return Rymi(api_key=account.key, base_url=server.v1)


async def place_call(
    server: ApiServer,
    account: Account,
    *,
    at_ms: int,
    audio_ms: int | None = None,
    status: CallStatus = CallStatus.COMPLETED,
    role: Role = Role.OPERATOR,
) -> str:
    """A call answered at ``at_ms``; finalized with ``audio_ms`` unless that is None."""
    agent = await server.directory.create_agent(account.tenant_id, name="desk", role=role)
    call_id = new_call_id()
    start = CallStart(
        call_id=call_id,
        tenant_id=account.tenant_id,
        agent_id=agent.id,
        number=random_number(),
        carrier="twilio",
        role=role,
        max_call_duration_s=600,
        answered_at_ms=at_ms,
        carrier_call_id=f"CA{call_id[-32:]}",
    )
    await server.ledger.open_call(start)
    await server.ledger.append_transcript(
        call_id,
        [
            TranscriptLine("caller", "Hello?", at_ms + 1_000),
            TranscriptLine("agent", "Hi, how can I help?", at_ms + 2_000),
        ],
    )
    if audio_ms is not None:
        end = CallEnd(call_id, status, "user_disconnect", at_ms + audio_ms + 500, audio_ms)
        await server.ledger.finalize(end)
    return call_id


def test_retrieve_has_transcript_and_billing(server: ApiServer) -> None:
    account = server.account()
    call_id = server.run(
        place_call(server, account, at_ms=T0, audio_ms=31_000, role=Role.SPECIALIST)
    )
    call = sdk(server, account).calls.retrieve(call_id)
    assert call["id"] == call_id
    assert call["status"] == "completed"
    assert call["started_at"] == "2026-09-21T14:13:20.000Z"
    assert call["end_reason"] == "user_disconnect"
    # 31 s of audio bill two 30 s units at $0.10/min: $0.10.
    assert call["bill_duration"] == 60
    assert call["total_cost"] == 0.1
    assert call["billing"] == {
        "role": "specialist",
        "rate_per_minute": 0.1,
        "billable_units": 2,
        "billable_seconds": 60,
        "cost_usd": 0.1,
    }
    assert [(t["speaker"], t["type"], t["text"]) for t in call["transcript"]] == [
        ("caller", "user_input", "Hello?"),
        ("agent", "ai_response", "Hi, how can I help?"),
    ]
    transcript = sdk(server, account).calls.transcript(call_id)
    assert transcript["call_id"] == call_id
    assert transcript["transcript"] == call["transcript"]


def test_list_pages_by_offset_and_cursor_and_filters_by_status(server: ApiServer) -> None:
    account = server.account()
    ids = [
        server.run(place_call(server, account, at_ms=T0 + i * 60_000, audio_ms=5_000))
        for i in range(5)
    ]
    live = server.run(place_call(server, account, at_ms=T0 + 10 * 60_000))
    client = sdk(server, account)
    everything = client.calls.list()
    assert everything["total"] == 6
    assert [c["id"] for c in everything["calls"]] == [live, *reversed(ids)]
    first = client.calls.list(limit=2, status="completed")
    assert [c["id"] for c in first["calls"]] == [ids[4], ids[3]]
    assert first["total"] == 5
    assert first["next_cursor"]
    second = client.calls.list(limit=2, status="completed", cursor=first["next_cursor"])
    assert [c["id"] for c in second["calls"]] == [ids[2], ids[1]]
    third = client.calls.list(limit=2, status="completed", cursor=second["next_cursor"])
    assert [c["id"] for c in third["calls"]] == [ids[0]]
    assert third["next_cursor"] is None
    by_offset = client.calls.list(limit=2, offset=3, status="completed")
    assert [c["id"] for c in by_offset["calls"]] == [ids[1], ids[0]]
    active = client.calls.active()
    assert [c["id"] for c in active["calls"]] == [live]
    assert active["calls"][0]["status"] == "in_progress"
    assert active["calls"][0]["ended_at"] is None
    assert active["calls"][0]["total_cost"] is None
    assert client.calls.list(status="in_progress")["total"] == 1
    assert client.calls.list(status="queued")["total"] == 0


@pytest.mark.parametrize(
    "query",
    ["status=exploded", "limit=0", "limit=201", "offset=-1", "cursor=%25%25%25", "limit=abc"],
)
async def test_bad_list_queries_are_400(
    server: ApiServer, http: aiohttp.ClientSession, query: str
) -> None:
    account = await server.call(server._account("q"))
    headers = {"Authorization": f"Bearer {account.key}"}
    async with http.get(f"{server.v1}/calls?{query}", headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["code"] == "invalid_request"


async def _next_command(server: ApiServer) -> CallCommand:
    async with contextlib.aclosing(server.owner.commands()) as commands:
        return await asyncio.wait_for(anext(commands), timeout=5)


def test_end_reaches_the_instance_that_owns_the_call(server: ApiServer) -> None:
    account = server.account()
    call_id = server.run(place_call(server, account, at_ms=T0))
    admission = server.run(server.owner.reserve(account.tenant_id, call_id, limit=None, ttl=30))
    assert admission.admitted
    result = sdk(server, account).calls.end(call_id)
    assert result["status"] == "ending"
    assert result["id"] == call_id
    command = server.run(_next_command(server))
    assert command == CallCommand(call_id, Command.HANGUP, "admin_hangup")
    server.run(server.owner.release(account.tenant_id, call_id, admission.lease.token))  # type: ignore[union-attr]


def test_end_of_a_call_that_is_not_live_is_404_and_sends_nothing(server: ApiServer) -> None:
    account = server.account()
    client = sdk(server, account)
    finished = server.run(place_call(server, account, at_ms=T0, audio_ms=1_000))
    orphan = server.run(place_call(server, account, at_ms=T0))  # live in SQL, no lease
    for call_id in (finished, orphan, "no-such-call"):
        with pytest.raises(RymiError) as caught:
            client.calls.end(call_id)
        assert caught.value.status == 404
    assert server.hub.queue("call-instance").empty()


def test_tenant_isolation_calls(server: ApiServer) -> None:
    alice, bob = server.account("alice"), server.account("bob")
    call_id = server.run(place_call(server, alice, at_ms=T0))
    admission = server.run(server.owner.reserve(alice.tenant_id, call_id, limit=None, ttl=30))
    bob_client = sdk(server, bob)
    assert bob_client.calls.list()["total"] == 0
    assert bob_client.calls.active()["total"] == 0
    attempts: list[Callable[[], object]] = [
        lambda: bob_client.calls.retrieve(call_id),
        lambda: bob_client.calls.transcript(call_id),
        lambda: bob_client.calls.end(call_id),
    ]
    for attempt in attempts:
        with pytest.raises(RymiError) as caught:
            attempt()
        assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert server.hub.queue("call-instance").empty()
    server.run(server.owner.release(alice.tenant_id, call_id, admission.lease.token))  # type: ignore[union-attr]
