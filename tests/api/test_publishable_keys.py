"""``/v1/keys/publishable``: create (plaintext once, hash stored), list, revoke; and
publishable keys are refused on every data endpoint."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from rymi import Rymi, RymiError

from gateway.store.sql import schema
from tests.api.conftest import Account, ApiServer
from tests.store.conftest import random_number


def sdk(server: ApiServer, key: str) -> Rymi:
    return Rymi(api_key=key, base_url=server.v1)


def agent_and_number(server: ApiServer, account: Account) -> tuple[str, str]:
    async def arrange() -> tuple[str, str]:
        agent = await server.directory.create_agent(account.tenant_id, name="web", published=True)
        number = random_number()
        await server.directory.add_number(account.tenant_id, number, agent.id)
        return agent.id, number

    return server.run(arrange())


async def key_rows(server: ApiServer, tenant_id: str) -> list[dict[str, Any]]:
    table = schema.api_keys
    async with server.engine.connect() as conn:
        result = await conn.execute(sa.select(table).where(table.c.tenant_id == tenant_id))
        return [dict(row._mapping) for row in result.all()]


def test_create_list_revoke_with_the_sdk(server: ApiServer) -> None:
    account = server.account()
    agent_id, number = agent_and_number(server, account)
    client = sdk(server, account.key)

    created = client.keys.create_publishable(
        agent_id,
        "landing page",
        allowed_channels=["web", "phone"],
        audience="landing_demo",
        default_from_number=number,
    )

    key = created["key"]
    assert key.startswith("sb_publishable_")
    assert created["agent_id"] == agent_id
    assert created["label"] == "landing page"
    assert created["allowed_channels"] == ["web", "phone"]
    assert created["audience"] == "landing_demo"
    assert created["default_from_number"] == number
    assert key.startswith(created["key_prefix"])
    # Only the SHA-256 hash is stored; the plaintext is nowhere in the row.
    [row] = [r for r in server.run(key_rows(server, account.tenant_id)) if r["id"] == created["id"]]
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in repr(row)

    listed = client.keys.list_publishable()["keys"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]
    assert listed[0]["allowed_channels"] == ["web", "phone"]
    assert listed[0]["default_from_number"] == number
    # The secret-key list does not show it.
    headers = {"Authorization": f"Bearer {account.key}"}
    secret_list = requests.get(f"{server.v1}/auth/api-keys", headers=headers, timeout=10).json()
    assert created["id"] not in [k["id"] for k in secret_list["keys"]]

    assert client.keys.revoke_publishable(created["id"]) == {"success": True}
    assert client.keys.list_publishable()["keys"] == []


def test_defaults_are_web_and_sdk(server: ApiServer) -> None:
    account = server.account()
    agent_id, _ = agent_and_number(server, account)
    created = sdk(server, account.key).keys.create_publishable(agent_id, "widget")
    assert created["allowed_channels"] == ["web"]
    assert created["audience"] == "sdk"
    assert created["default_from_number"] is None


@pytest.mark.parametrize(
    "path", ["/numbers", "/agents", "/calls", "/billing/balance", "/keys/publishable"]
)
@pytest.mark.parametrize("legacy", [False, True])
def test_publishable_keys_get_401_on_data_endpoints(
    server: ApiServer, path: str, legacy: bool
) -> None:
    account = server.account()
    agent_id, _ = agent_and_number(server, account)
    key = sdk(server, account.key).keys.create_publishable(agent_id, "web")["key"]
    if legacy:  # the legacy prefix is refused the same way, whether or not it exists
        key = "rymi_pk_" + key.removeprefix("sb_publishable_")
    response = requests.get(
        f"{server.v1}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert response.status_code == 401
    assert response.json()["code"] == "publishable_key_not_allowed"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"label": "x"}, 400, "invalid_request"),  # no agent
        ({"agent_id": "AGENT"}, 400, "invalid_request"),  # no label
        ({"agent_id": "AGENT", "label": "x", "allowed_channels": ["sms"]}, 400, "invalid_request"),
        ({"agent_id": "AGENT", "label": "x", "allowed_channels": []}, 400, "invalid_request"),
        ({"agent_id": "AGENT", "label": "x", "audience": "everyone"}, 400, "invalid_request"),
        (
            {"agent_id": "AGENT", "label": "x", "default_from_number": "+14155550000"},
            400,
            "invalid_request",
        ),
        ({"agent_id": "OTHER", "label": "x"}, 404, "not_found"),
        ({"agent_id": "nope", "label": "x"}, 404, "not_found"),
    ],
)
def test_refused_creations_store_nothing(
    server: ApiServer, body: dict[str, Any], status: int, code: str
) -> None:
    account, other = server.account(), server.account()
    agent_id, _ = agent_and_number(server, account)
    other_agent, _ = agent_and_number(server, other)
    body = {
        **body,
        **({"agent_id": agent_id} if body.get("agent_id") == "AGENT" else {}),
        **({"agent_id": other_agent} if body.get("agent_id") == "OTHER" else {}),
    }
    counts = server.counts()
    with pytest.raises(RymiError) as caught:
        sdk(server, account.key)._client.post("/keys/publishable", json=body)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert server.counts() == counts


def test_revoke_is_per_tenant_and_only_for_publishable_keys(server: ApiServer) -> None:
    account, other = server.account(), server.account()
    agent_id, _ = agent_and_number(server, account)
    created = sdk(server, account.key).keys.create_publishable(agent_id, "web")
    # Another tenant cannot revoke it (or learn it exists), nor can a secret key's id be
    # revoked through this path.
    for client, key_id in (
        (sdk(server, other.key), created["id"]),
        (sdk(server, account.key), account.key_id),
    ):
        with pytest.raises(RymiError) as caught:
            client.keys.revoke_publishable(key_id)
        assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert [k["id"] for k in sdk(server, account.key).keys.list_publishable()["keys"]] == [
        created["id"]
    ]
    assert sdk(server, account.key).numbers.list()["total"] == 1  # the secret key still works
