"""``/v1/agents``: the fields the gateway uses, validation, and kept unknown fields."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest
from rymi import Rymi, RymiError

from tests.api.conftest import Account, ApiServer

SECRET = "s" * 40


def sdk(server: ApiServer, account: Account) -> Rymi:
    return Rymi(api_key=account.key, base_url=server.v1)


def test_create_defaults_and_keeps_unknown_fields(server: ApiServer) -> None:
    client = sdk(server, server.account())
    agent = client.agents.create(
        "Front desk",
        system_prompt="You answer the phone.",
        voice="alloy",
        language="en-US",
        supported_languages=["en-US", "hi-IN"],
        advanced={"postSilenceHangup": 20},
        features={"recording_enabled": True},
    )
    assert agent["name"] == "Front desk"
    assert agent["agent_role"] == "operator"
    assert agent["published"] is False
    assert agent["advanced"] == {"postSilenceHangup": 20, "maxCallDuration": 600}
    assert agent["pipeline"] == {
        "type": "builtin",
        "name": "echo",
        "url": None,
        "has_secret": False,
    }
    assert agent["barge_in"] == "on"
    assert agent["system_prompt"] == "You answer the phone."
    assert (agent["voice"], agent["language"]) == ("alloy", "en-US")
    assert agent["supported_languages"] == ["en-US", "hi-IN"]
    assert agent["features"] == {"recording_enabled": True}
    assert client.agents.retrieve(agent["id"]) == agent


def test_websocket_pipeline_secret_is_never_returned(server: ApiServer) -> None:
    account = server.account()
    client = sdk(server, account)
    agent = client.agents.create(
        "Bot",
        agent_role="specialist",
        barge_in="off",
        advanced={"maxCallDuration": 7200},
        pipeline={"type": "websocket", "url": "wss://agent.example.com/ws", "secret": SECRET},
    )
    assert agent["pipeline"] == {
        "type": "websocket",
        "name": None,
        "url": "wss://agent.example.com/ws",
        "has_secret": True,
    }
    assert (agent["agent_role"], agent["barge_in"]) == ("specialist", "off")
    assert agent["advanced"]["maxCallDuration"] == 7200
    assert SECRET not in str(client.agents.retrieve(agent["id"]))
    assert SECRET not in str(client.agents.list())
    stored = server.run(server.directory.agent_pipeline_secret(account.tenant_id, agent["id"]))
    assert stored is not None
    assert stored.reveal() == SECRET


@pytest.mark.parametrize("duration", [29, 7201, 0, -5])
def test_max_call_duration_out_of_range_is_400_naming_the_range(
    server: ApiServer, duration: int
) -> None:
    account = server.account()
    before = server.counts()
    with pytest.raises(RymiError) as caught:
        sdk(server, account).agents.create("x", advanced={"maxCallDuration": duration})
    assert caught.value.status == 400
    assert server.counts() == before


async def test_range_message_names_the_field_and_range(
    server: ApiServer, http: aiohttp.ClientSession
) -> None:
    account = await server.call(server._account("range"))
    headers = {"Authorization": f"Bearer {account.key}"}
    body = {"name": "x", "advanced": {"maxCallDuration": 10}}
    async with http.post(f"{server.v1}/agents", json=body, headers=headers) as response:
        assert response.status == 400
        error = await response.json()
    assert error["code"] == "invalid_request"
    assert "advanced.maxCallDuration" in error["message"]
    assert "30-7200" in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x", "agent_role": "boss"},
        {"name": "x", "barge_in": "sometimes"},
        {"name": "x", "pipeline": {"type": "websocket", "url": "https://not-ws.example.com"}},
        {"name": "x", "pipeline": {"type": "websocket", "url": "wss://a.example.com"}},
        {"name": "x", "pipeline": {"type": "builtin", "name": "parrot"}},
        {"name": "x", "advanced": {"maxCallDuration": "long"}},
    ],
)
async def test_invalid_agents_are_400_and_store_nothing(
    server: ApiServer, http: aiohttp.ClientSession, body: dict[str, object]
) -> None:
    account = await server.call(server._account("bad"))
    headers = {"Authorization": f"Bearer {account.key}"}
    before = await server.call(_counts(server))
    async with http.post(f"{server.v1}/agents", json=body, headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["code"] == "invalid_request"
    assert await server.call(_counts(server)) == before


async def _counts(server: ApiServer) -> dict[str, int]:
    from tests.store.conftest import row_counts

    return await row_counts(server.engine)


def test_update_is_partial_and_merges_kept_fields(server: ApiServer) -> None:
    client = sdk(server, server.account())
    agent = client.agents.create("A", voice="alloy", advanced={"postSilenceHangup": 20})
    updated = client.agents.update(
        agent["id"],
        language="fr-FR",
        agent_role="executive",
        advanced={"maxCallDuration": 45, "silencePromptDelay": 5},
    )
    assert updated["name"] == "A"
    assert (updated["voice"], updated["language"]) == ("alloy", "fr-FR")
    assert updated["agent_role"] == "executive"
    assert updated["advanced"] == {
        "postSilenceHangup": 20,
        "silencePromptDelay": 5,
        "maxCallDuration": 45,
    }
    # Echoing a retrieved agent back is harmless: read-only fields are ignored.
    echoed = dict(updated)
    echoed.pop("id")
    again = client.agents.update(agent["id"], **echoed)
    assert again["advanced"] == updated["advanced"]
    assert again["published"] is False
    with pytest.raises(RymiError) as caught:
        client.agents.update(agent["id"], advanced={"maxCallDuration": 9000})
    assert caught.value.status == 400
    assert client.agents.retrieve(agent["id"])["advanced"]["maxCallDuration"] == 45


def test_switching_pipelines(server: ApiServer) -> None:
    account = server.account()
    client = sdk(server, account)
    agent = client.agents.create("A")
    ws = {"type": "websocket", "url": "ws://127.0.0.1:9/agent", "secret": SECRET}
    assert client.agents.update(agent["id"], pipeline=ws)["pipeline"]["has_secret"] is True
    back = client.agents.update(agent["id"], pipeline={"type": "builtin", "name": "echo"})
    assert back["pipeline"] == {"type": "builtin", "name": "echo", "url": None, "has_secret": False}
    assert (
        server.run(server.directory.agent_pipeline_secret(account.tenant_id, agent["id"])) is None
    )


async def test_publish_unpublish_delete(server: ApiServer, http: aiohttp.ClientSession) -> None:
    account = await server.call(server._account("pub"))
    headers = {"Authorization": f"Bearer {account.key}"}
    async with http.post(f"{server.v1}/agents", json={"name": "P"}, headers=headers) as r:
        agent = await r.json()
        assert r.status == 201
    base = f"{server.v1}/agents/{agent['id']}"
    async with http.post(f"{base}/publish", headers=headers) as r:
        assert await r.json() == {"published": True, "id": agent["id"], "blockers": []}
    stored = await server.call(server.directory.get_agent(account.tenant_id, agent["id"]))
    assert stored.published is True
    async with http.post(f"{base}/unpublish", headers=headers) as r:
        assert (await r.json())["published"] is False
    async with http.patch(base, json={"name": "Q"}, headers=headers) as r:
        assert (await r.json())["name"] == "Q"
    async with http.delete(base, headers=headers) as r:
        assert await r.json() == {"status": "deleted", "id": agent["id"]}
    for method in ("GET", "DELETE", "PUT"):
        async with http.request(method, base, json={}, headers=headers) as r:
            assert r.status == 404
    async with http.post(f"{base}/publish", headers=headers) as r:
        assert r.status == 404


def test_deleting_an_agent_detaches_its_numbers(server: ApiServer) -> None:
    from tests.store.conftest import random_number

    account = server.account()
    client = sdk(server, account)
    agent = client.agents.create("A")
    number = random_number()
    client.numbers.register(number, agent_id=agent["id"])
    client.agents.delete(agent["id"])
    assert client.numbers.list()["numbers"][0]["agent_id"] is None


def test_list_pages(server: ApiServer) -> None:
    client = sdk(server, server.account())
    ids = [client.agents.create(f"agent {i}")["id"] for i in range(3)]
    page = client.agents.list(limit=2, offset=1)
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)
    assert [a["id"] for a in page["agents"]] == ids[1:]


def test_tenant_isolation_agents(server: ApiServer) -> None:
    alice, bob = server.account("alice"), server.account("bob")
    agent = sdk(server, alice).agents.create("Alice's")
    bob_client = sdk(server, bob)
    assert bob_client.agents.list()["total"] == 0
    attempts: list[Callable[[], object]] = [
        lambda: bob_client.agents.retrieve(agent["id"]),
        lambda: bob_client.agents.update(agent["id"], name="stolen"),
        lambda: bob_client.agents.delete(agent["id"]),
    ]
    for attempt in attempts:
        with pytest.raises(RymiError) as caught:
            attempt()
        assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert sdk(server, alice).agents.retrieve(agent["id"])["name"] == "Alice's"
