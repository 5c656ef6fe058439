"""``/v1/numbers``: BYOC registrations, through the SDK where it has the method."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest
from rymi import Rymi, RymiError
from yarl import URL

from tests.api.conftest import Account, ApiServer
from tests.store.conftest import random_number


def sdk(server: ApiServer, account: Account) -> Rymi:
    return Rymi(api_key=account.key, base_url=server.v1)


def agent_id(server: ApiServer, account: Account, name: str = "front desk") -> str:
    return server.run(server.directory.create_agent(account.tenant_id, name=name)).id


def test_register_is_201_then_200_updating_the_agent(server: ApiServer) -> None:
    account = server.account()
    client, number = sdk(server, account), random_number()
    first = client.numbers.register(number)
    assert first == {"status": "registered", "number": number, "agent_id": None}
    agent = agent_id(server, account)
    again = client.numbers.register(number, agent_id=agent)
    assert again == {"status": "registered", "number": number, "agent_id": agent}
    listed = client.numbers.list()["numbers"]
    assert [(n["number"], n["agent_id"]) for n in listed] == [(number, agent)]
    # Re-registering without an agent keeps the agent.
    client.numbers.register(number)
    assert client.numbers.list()["numbers"][0]["agent_id"] == agent


async def test_register_status_codes(server: ApiServer, http: aiohttp.ClientSession) -> None:
    account = await server.call(server._account("codes"))
    headers = {"Authorization": f"Bearer {account.key}"}
    body = {"number": random_number()}
    async with http.post(f"{server.v1}/numbers", json=body, headers=headers) as first:
        assert first.status == 201
    async with http.post(f"{server.v1}/numbers", json=body, headers=headers) as second:
        assert second.status == 200


@pytest.mark.parametrize(
    "bad", ["14155550100", "+0155550100", "+1 415 555 0100", "+1234567890123456", ""]
)
def test_bad_e164_is_400_and_stores_nothing(server: ApiServer, bad: str) -> None:
    account = server.account()
    before = server.counts()
    with pytest.raises(RymiError) as caught:
        sdk(server, account).numbers.register(bad)
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
    assert "E.164" in str(caught.value) or caught.value.status == 400
    assert server.counts() == before


def test_number_of_another_tenant_is_409_and_unchanged(server: ApiServer) -> None:
    owner, other = server.account("owner"), server.account("other")
    number = random_number()
    owner_agent = agent_id(server, owner)
    sdk(server, owner).numbers.register(number, agent_id=owner_agent)
    before = server.counts()
    with pytest.raises(RymiError) as caught:
        sdk(server, other).numbers.register(number)
    assert (caught.value.status, caught.value.code) == (409, "conflict")
    assert server.counts() == before
    route = server.run(server.directory.resolve_number(number))
    assert (route.tenant.id, route.agent and route.agent.id) == (owner.tenant_id, owner_agent)


def test_register_with_another_tenants_agent_is_404(server: ApiServer) -> None:
    mine, theirs = server.account(), server.account()
    before = server.counts()
    with pytest.raises(RymiError) as caught:
        sdk(server, mine).numbers.register(random_number(), agent_id=agent_id(server, theirs))
    assert caught.value.status == 404
    assert server.counts()["numbers"] == before["numbers"]


def test_attach_with_raw_plus_in_the_path_as_the_sdk_sends_it(server: ApiServer) -> None:
    account = server.account()
    client, number = sdk(server, account), random_number()
    client.numbers.register(number)
    agent = agent_id(server, account)
    assert client.numbers.attach(number, agent) == {
        "status": "attached",
        "number": number,
        "agent_id": agent,
    }
    route = server.run(server.directory.resolve_number(number))
    assert route.agent is not None
    assert route.agent.id == agent


async def test_attach_detach_remove_with_url_encoded_number(
    server: ApiServer, http: aiohttp.ClientSession
) -> None:
    account = await server.call(server._account("enc"))
    headers = {"Authorization": f"Bearer {account.key}"}
    number = random_number()
    agent = (await server.call(server.directory.create_agent(account.tenant_id, name="a"))).id
    async with http.post(f"{server.v1}/numbers", json={"number": number}, headers=headers) as r:
        assert r.status == 201
    encoded = number.replace("+", "%2B")
    attach = URL(f"{server.v1}/numbers/{encoded}/attach", encoded=True)
    async with http.post(attach, json={"agent_id": agent}, headers=headers) as r:
        assert r.status == 200
        assert (await r.json())["agent_id"] == agent
    detach = URL(f"{server.v1}/numbers/{encoded}/detach", encoded=True)
    async with http.post(detach, headers=headers) as r:
        assert await r.json() == {"status": "detached", "number": number}
    route = await server.call(server.directory.resolve_number(number))
    assert route.agent is None
    async with http.delete(
        URL(f"{server.v1}/numbers/{encoded}", encoded=True), headers=headers
    ) as r:
        assert await r.json() == {"status": "removed", "number": number}
    async with http.delete(
        URL(f"{server.v1}/numbers/{encoded}", encoded=True), headers=headers
    ) as r:
        assert r.status == 404


def test_remove_through_the_sdk(server: ApiServer) -> None:
    account = server.account()
    client, number = sdk(server, account), random_number()
    client.numbers.register(number)
    assert client.numbers.remove(number) == {"status": "removed", "number": number}
    assert client.numbers.list()["total"] == 0


def test_list_pages_with_limit_and_offset(server: ApiServer) -> None:
    account = server.account()
    client = sdk(server, account)
    numbers = sorted(random_number() for _ in range(5))
    for number in numbers:
        client.numbers.register(number)
    page = client.numbers.list(limit=2, offset=1)
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    assert [n["number"] for n in page["numbers"]] == numbers[1:3]
    assert page["numbers"][0]["phone_number"] == numbers[1]
    with pytest.raises(RymiError) as caught:
        client.numbers.list(limit=201)
    assert caught.value.status == 400


def test_attach_to_a_missing_agent_or_unknown_number_is_404(server: ApiServer) -> None:
    account = server.account()
    client, number = sdk(server, account), random_number()
    client.numbers.register(number)
    with pytest.raises(RymiError) as caught:
        client.numbers.attach(number, "no-such-agent")
    assert caught.value.status == 404
    with pytest.raises(RymiError) as caught:
        client.numbers.attach(random_number(), agent_id(server, account))
    assert caught.value.status == 404
    with pytest.raises(RymiError) as caught:
        client.numbers.attach("not-a-number", agent_id(server, account))
    assert caught.value.status == 400


def test_tenant_isolation_numbers(server: ApiServer) -> None:
    alice, bob = server.account("alice"), server.account("bob")
    number = random_number()
    sdk(server, alice).numbers.register(number)
    bob_client = sdk(server, bob)
    assert bob_client.numbers.list()["total"] == 0
    bob_agent = agent_id(server, bob)
    attempts: list[Callable[[], object]] = [
        lambda: bob_client.numbers.attach(number, bob_agent),
        lambda: bob_client.numbers.remove(number),
    ]
    for attempt in attempts:
        with pytest.raises(RymiError) as caught:
            attempt()
        assert caught.value.status == 404  # not 403: bob cannot tell it exists
    route = server.run(server.directory.resolve_number(number))
    assert route.tenant.id == alice.tenant_id
    assert route.agent is None
