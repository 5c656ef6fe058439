"""``POST /v1/calls``: outbound dialing through the tenant's carrier, admitted like inbound.

The carriers' call-create APIs are the local stand-ins of :mod:`tests.api.carriers`,
which check each carrier's auth and record exactly what they received.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from rymi import Rymi, RymiError

from gateway.api import ApiSettings
from gateway.store.models import (
    CallStatus,
    CarrierCredentials,
    Direction,
    KeyKind,
    PlivoCredentials,
    TwilioCredentials,
    VonageCredentials,
)
from gateway.store.secrets import Secret
from tests.api.carriers import (
    PLIVO_ID,
    PLIVO_TOKEN,
    TWILIO_SID,
    TWILIO_TOKEN,
    VONAGE_KEY,
    VONAGE_SECRET,
)
from tests.api.conftest import PUBLIC_BASE_URL, Account, ApiServer
from tests.store.conftest import random_number

CALLEE = "+14155550177"


def _credentials(carrier: str) -> CarrierCredentials:
    if carrier == "twilio":
        return TwilioCredentials(TWILIO_SID, Secret(TWILIO_TOKEN))
    if carrier == "plivo":
        return PlivoCredentials(PLIVO_ID, Secret(PLIVO_TOKEN))
    return VonageCredentials(VONAGE_KEY, Secret(VONAGE_SECRET))


@dataclass
class Dialer:
    """A tenant ready to dial: carrier connected, published agent on a number, credit."""

    account: Account
    agent_id: str
    number: str
    client: Rymi


def dialer(
    server: ApiServer,
    carrier: str = "twilio",
    *,
    limit: int | None = None,
    credit_micros: int = 5_000_000,
    published: bool = True,
) -> Dialer:
    account = server.account()

    async def arrange() -> tuple[str, str]:
        directory = server.directory
        await directory.set_max_concurrent_calls(account.tenant_id, limit)
        await directory.connect_carrier(account.tenant_id, _credentials(carrier))
        agent = await directory.create_agent(account.tenant_id, name="sales", published=published)
        number = random_number()
        await directory.add_number(account.tenant_id, number, agent.id)
        if credit_micros:
            await server.ledger.top_up(account.tenant_id, credit_micros)
        return agent.id, number

    agent_id, number = server.run(arrange())
    return Dialer(account, agent_id, number, Rymi(api_key=account.key, base_url=server.v1))


def leases(server: ApiServer, tenant_id: str) -> int:
    return server.run(server.coordination.active_calls(tenant_id))


def raw_dial(server: ApiServer, d: Dialer) -> requests.Response:
    """``POST /v1/calls`` without the SDK, to see headers and the error's message."""
    body: dict[str, Any] = {
        "agent_id": d.agent_id,
        "participants": [{"transport": "pstn", "identity": CALLEE}],
    }
    headers = {"Authorization": f"Bearer {d.account.key}"}
    return requests.post(f"{server.v1}/calls", json=body, headers=headers, timeout=10)


def refused(call: Any, status: int, code: str) -> RymiError:
    with pytest.raises(RymiError) as caught:
        call()
    assert (caught.value.status, caught.value.code) == (status, code), caught.value
    return caught.value


def test_twilio_dial_is_queued_with_exactly_the_documented_request(server: ApiServer) -> None:
    d = dialer(server, "twilio")
    before = len(server.carriers.dials)

    call = d.client.calls.create(d.agent_id, to=CALLEE, from_number=d.number)

    assert call["status"] == "queued"
    assert call["direction"] == "outbound"
    assert call["provider"] == "twilio"
    assert call["room_name"] == f"call_{call['id']}"
    assert call["participants"] == [
        {
            "id": call["id"],
            "transport": "pstn",
            "identity": CALLEE,
            "status": "joining",
            "telephony_leg_id": call["id"],
        }
    ]
    assert call["agent"] == {"id": d.agent_id, "name": "sales"}
    [dialed] = server.carriers.dials[before:]
    assert dialed.carrier == "twilio"
    assert dialed.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"
    assert dialed.content_type == "application/x-www-form-urlencoded"
    assert dialed.fields == {
        "To": CALLEE,
        "From": d.number,
        "Url": f"{PUBLIC_BASE_URL}/inbound/twilio?rymi_call={call['id']}",
        "Method": "POST",
        "Timeout": "60",
    }
    record = server.run(server.ledger.get_call(call["id"], d.account.tenant_id))
    assert record.status is CallStatus.QUEUED
    assert record.direction is Direction.OUTBOUND
    assert (record.number, record.remote_number) == (d.number, CALLEE)
    assert record.carrier_call_id == dialed.call_id
    assert leases(server, d.account.tenant_id) == 1
    # Listed as queued and as active (it holds a slot), with the callee.
    retrieved = d.client.calls.retrieve(call["id"])
    assert (retrieved["status"], retrieved["remote_number"]) == ("queued", CALLEE)
    assert [c["id"] for c in d.client.calls.active()["calls"]] == [call["id"]]
    assert [c["id"] for c in d.client.calls.list(status="queued")["calls"]] == [call["id"]]


def test_plivo_dial_sends_plivo_json_and_defaults_the_caller_id(server: ApiServer) -> None:
    d = dialer(server, "plivo")
    before = len(server.carriers.dials)

    # No from_number: the number attached to the agent is the caller ID.
    call = d.client.calls.create(d.agent_id, to=CALLEE)

    [dialed] = server.carriers.dials[before:]
    assert dialed.path == f"/v1/Account/{PLIVO_ID}/Call/"
    assert dialed.content_type == "application/json"
    assert dialed.fields == {
        "from": d.number.lstrip("+"),
        "to": CALLEE.lstrip("+"),
        "answer_url": f"{PUBLIC_BASE_URL}/inbound/plivo?rymi_call={call['id']}",
        "answer_method": "POST",
        "ring_timeout": 60,
    }
    query = parse_qs(urlsplit(dialed.fields["answer_url"]).query)
    assert query == {"rymi_call": [call["id"]]}
    record = server.run(server.ledger.get_call(call["id"]))
    assert (record.status, record.carrier) == (CallStatus.QUEUED, "plivo")
    assert record.carrier_call_id == dialed.call_id  # Plivo's request_uuid


def test_concurrency_limit_is_429_and_stores_nothing(server: ApiServer) -> None:
    d = dialer(server, limit=1)
    d.client.calls.create(d.agent_id, to=CALLEE)
    counts, dials = server.counts(), len(server.carriers.dials)

    refused(
        lambda: d.client.calls.create(d.agent_id, to=CALLEE), 429, "quota_exceeded.concurrent_calls"
    )
    response = raw_dial(server, d)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert "limit of 1 concurrent calls" in response.json()["message"]
    assert server.counts() == counts
    assert len(server.carriers.dials) == dials
    assert leases(server, d.account.tenant_id) == 1


def test_a_slot_held_by_an_inbound_call_counts_against_dialing(server: ApiServer) -> None:
    d = dialer(server, limit=1)
    # The answer path's reservation for an inbound call (same coordination backend).
    admission = server.run(
        server.coordination.admit(d.account.tenant_id, str(uuid.uuid4()), limit=1, ttl=30)
    )
    assert admission.lease is not None
    refused(
        lambda: d.client.calls.create(d.agent_id, to=CALLEE), 429, "quota_exceeded.concurrent_calls"
    )


def test_zero_balance_is_402_with_no_call_no_lease_no_dial(server: ApiServer) -> None:
    d = dialer(server, credit_micros=0)
    counts, dials = server.counts(), len(server.carriers.dials)

    refused(lambda: d.client.calls.create(d.agent_id, to=CALLEE), 402, "balance_depleted")

    assert server.counts() == counts
    assert len(server.carriers.dials) == dials
    assert leases(server, d.account.tenant_id) == 0


def test_carrier_failure_releases_the_slot_and_fails_the_call_unbilled(
    server: ApiServer,
) -> None:
    d = dialer(server)
    server.carriers.failing = True
    try:
        refused(lambda: d.client.calls.create(d.agent_id, to=CALLEE), 502, "carrier_dial_failed")
        response = raw_dial(server, d)
    finally:
        server.carriers.failing = False
    assert response.status_code == 502
    assert "HTTP 503" in response.json()["message"]
    assert TWILIO_TOKEN not in response.text
    assert leases(server, d.account.tenant_id) == 0
    listed = d.client.calls.list()["calls"]
    assert len(listed) == 2  # the SDK's attempt and the raw one
    for call in listed:
        assert (call["status"], call["end_reason"]) == ("failed", "carrier_dial_failed")
        assert (call["bill_duration"], call["total_cost"]) == (0, 0.0)
    assert server.run(server.ledger.balance_micros(d.account.tenant_id)) == 5_000_000
    assert d.client.calls.active()["calls"] == []


def test_vonage_is_501_and_stores_nothing(server: ApiServer) -> None:
    d = dialer(server, "vonage")
    counts = server.counts()
    refused(lambda: d.client.calls.create(d.agent_id, to=CALLEE), 501, "outbound_not_supported")
    assert "private key" in raw_dial(server, d).json()["message"]
    assert server.counts() == counts
    assert leases(server, d.account.tenant_id) == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"participants": [{"transport": "pstn", "identity": CALLEE}]}, 400, "invalid_request"),
        ({"agent_id": "x", "participants": []}, 400, "invalid_request"),
        (
            {"agent_id": "AGENT", "participants": [{"transport": "webrtc", "identity": "me"}]},
            400,
            "invalid_request",
        ),
        (
            {"agent_id": "AGENT", "participants": [{"transport": "pstn", "identity": "555"}]},
            400,
            "invalid_request",
        ),
        (
            {
                "agent_id": "AGENT",
                "participants": [
                    {"transport": "pstn", "identity": CALLEE, "from_number": "+14155550000"}
                ],
            },
            400,
            "invalid_request",
        ),
        (
            {
                "agent_id": str(uuid.uuid4()),
                "participants": [{"transport": "pstn", "identity": CALLEE}],
            },
            404,
            "not_found",
        ),
    ],
)
def test_bad_requests_store_nothing(
    server: ApiServer, body: dict[str, Any], status: int, code: str
) -> None:
    d = dialer(server)
    if body.get("agent_id") == "AGENT":
        body = {**body, "agent_id": d.agent_id}
    counts = server.counts()
    refused(lambda: d.client._client.post("/calls", json=body), status, code)
    assert server.counts() == counts
    assert leases(server, d.account.tenant_id) == 0


def test_unpublished_agent_is_409_and_no_carrier_is_404(server: ApiServer) -> None:
    d = dialer(server, published=False)
    refused(lambda: d.client.calls.create(d.agent_id, to=CALLEE), 409, "agent_not_published")
    server.run(server.directory.disconnect_carrier(d.account.tenant_id))
    server.run(server.directory.set_published(d.account.tenant_id, d.agent_id, True))
    refused(lambda: d.client.calls.create(d.agent_id, to=CALLEE), 404, "carrier_not_connected")
    assert d.client.calls.list()["calls"] == []


def test_another_tenants_agent_is_404(server: ApiServer) -> None:
    mine, theirs = dialer(server), dialer(server)
    refused(lambda: mine.client.calls.create(theirs.agent_id, to=CALLEE), 404, "not_found")
    assert leases(server, mine.account.tenant_id) == 0


def test_publishable_keys_cannot_dial(server: ApiServer) -> None:
    d = dialer(server)
    created = server.run(
        server.directory.create_api_key(
            d.account.tenant_id,
            KeyKind.PUBLISHABLE,
            label="web",
            agent_id=d.agent_id,
            allowed_channels=("web", "phone"),
        )
    )
    client = Rymi(api_key=created.plaintext.reveal(), base_url=server.v1)
    refused(lambda: client.calls.create(d.agent_id, to=CALLEE), 401, "publishable_key_not_allowed")
    assert leases(server, d.account.tenant_id) == 0


@pytest.mark.parametrize("carrier", ["twilio", "plivo"])
def test_ending_a_queued_call_cancels_it_unbilled(server: ApiServer, carrier: str) -> None:
    d = dialer(server, carrier, limit=1)
    call = d.client.calls.create(d.agent_id, to=CALLEE)
    placed = server.carriers.dials[-1].call_id
    cancels = len(server.carriers.cancels)

    ended = d.client.calls.end(call["id"])

    assert ended["status"] == "canceled"
    assert ended["id"] == call["id"]
    assert leases(server, d.account.tenant_id) == 0
    expected = {"Status": "canceled"} if carrier == "twilio" else {}
    assert server.carriers.cancels[cancels:] == [(carrier, placed, expected)]
    record = server.run(server.ledger.get_call(call["id"]))
    assert (record.status, record.end_reason, record.cost_micros) == (
        CallStatus.CANCELED,
        "canceled",
        0,
    )
    # The slot is free again: the next dial goes through; ending twice is a 404.
    d.client.calls.create(d.agent_id, to=CALLEE)
    refused(lambda: d.client.calls.end(call["id"]), 404, "call_not_live")


def test_coordination_down_is_503_and_stores_nothing(
    make_server: Callable[[ApiSettings], ApiServer],
) -> None:
    api = make_server(ApiSettings(public_base_url=PUBLIC_BASE_URL))
    d = dialer(api)
    api.run(api.coordination.close())  # admission fails closed; the rate limiter fails open
    counts = api.counts()
    refused(lambda: d.client.calls.create(d.agent_id, to=CALLEE), 503, "coordination_unavailable")
    assert api.counts() == counts
    assert api.carriers.dials == []
