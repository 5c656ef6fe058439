"""``/v1/auth/api-keys`` and ``/v1/billing``."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest
import sqlalchemy as sa
from rymi import Rymi, RymiError

from gateway.store.sql import schema
from tests.api.conftest import ADMIN_TOKEN, Account, ApiServer


def sdk(server: ApiServer, account: Account) -> Rymi:
    return Rymi(api_key=account.key, base_url=server.v1)


def headers(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.key}"}


async def stored_hashes(server: ApiServer) -> set[str]:
    async with server.engine.connect() as conn:
        rows = await conn.execute(sa.select(schema.api_keys.c.key_hash))
        return {str(row[0]) for row in rows}


def test_created_key_is_shown_once_and_only_its_hash_is_stored(server: ApiServer) -> None:
    account = server.account()
    created = sdk(server, account).keys.create("account", [], label="ci")
    key = created["key"]
    assert key.startswith("rymi_")
    assert created["key_prefix"] == key[: len(created["key_prefix"])]
    assert (created["label"], created["kind"], created["scopes"]) == ("ci", "account", ["*"])
    assert hashlib.sha256(key.encode()).hexdigest() in server.run(stored_hashes(server))
    # The new key works, and the listing shows prefixes only.
    listed = sdk(server, Account(account.tenant_id, key, created["id"]))
    body = listed._client.get("/auth/api-keys")
    assert {k["id"] for k in body["keys"]} == {account.key_id, created["id"]}
    assert key not in str(body)


def test_scoped_keys_are_refused_not_silently_widened(server: ApiServer) -> None:
    account = server.account()
    before = server.counts()
    with pytest.raises(RymiError) as caught:
        sdk(server, account).keys.create("account", ["calls:read"])
    assert caught.value.status == 400
    assert server.counts() == before


async def test_revoked_key_is_refused_immediately(
    server: ApiServer, http: aiohttp.ClientSession
) -> None:
    account = await server.call(server._account("revoke"))
    async with http.post(
        f"{server.v1}/auth/api-keys", json={"label": "temp"}, headers=headers(account)
    ) as r:
        assert r.status == 201
        temp = await r.json()
    temp_headers = {"Authorization": f"Bearer {temp['key']}"}
    async with http.get(f"{server.v1}/numbers", headers=temp_headers) as r:
        assert r.status == 200
    async with http.delete(
        f"{server.v1}/auth/api-keys/{temp['id']}", headers=headers(account)
    ) as r:
        assert await r.json() == {"status": "revoked", "id": temp["id"]}
    async with http.get(f"{server.v1}/numbers", headers=temp_headers) as r:
        assert r.status == 401
        assert (await r.json())["code"] == "invalid_api_key"
    async with http.delete(
        f"{server.v1}/auth/api-keys/{temp['id']}", headers=headers(account)
    ) as r:
        assert r.status == 404


async def test_keys_are_isolated_and_last_use_is_recorded(
    server: ApiServer, http: aiohttp.ClientSession
) -> None:
    alice = await server.call(server._account("alice"))
    bob = await server.call(server._account("bob"))
    async with http.delete(f"{server.v1}/auth/api-keys/{alice.key_id}", headers=headers(bob)) as r:
        assert r.status == 404
    async with http.get(f"{server.v1}/auth/api-keys", headers=headers(alice)) as r:
        (only,) = (await r.json())["keys"]
    assert only["id"] == alice.key_id
    assert only["last_used_at"] is not None
    assert only["last_used_at"].endswith("Z")


def test_agent_roles_and_balance_at_the_operator_rate(server: ApiServer) -> None:
    account = server.account()
    client = sdk(server, account)
    roles = client._client.get("/billing/agent-roles")["roles"]
    assert roles["operator"] == {
        "rate_per_minute": 0.05,
        "rate_per_second": 0.00083333,
        "display_name": "Operator",
    }
    assert [roles[r]["rate_per_minute"] for r in ("specialist", "executive", "concierge")] == [
        0.1,
        0.25,
        0.4,
    ]
    empty = client._client.get("/billing/balance")
    assert (empty["balance_usd"], empty["balance_seconds"], empty["is_active"]) == (0.0, 0, False)
    server.run(server.ledger.top_up(account.tenant_id, 15_000_000))
    balance = client._client.get("/billing/balance")
    # docs.rymi.live/api/billing.html: $15.00 at $0.05/min = 300 min = 18 000 s.
    assert balance["balance_usd"] == 15.0
    assert balance["balance_seconds"] == 18_000
    assert balance["estimated_minutes_remaining"] == 300.0
    assert balance["is_active"] is True
    assert balance["tenant_id"] == account.tenant_id
    summary = client.billing.usage_summary()
    assert summary["voice_runtime"] == {"remaining_minutes": 300.0, "status": "active"}
    assert summary["current_month"]["calls"] == 0


def test_alerts_are_stored_and_merged(server: ApiServer) -> None:
    account = server.account()
    client = sdk(server, account)
    assert client.billing.set_alerts(thresholds_usd=[10, 2.5], low_balance_pct=20) == {"ok": True}
    assert client._client.get("/billing/alerts") == {
        "thresholds_usd": [2.5, 10.0],
        "low_balance_pct": 20,
        "email_enabled": True,
    }
    client.billing.set_alerts(email_enabled=False)
    assert client._client.get("/billing/alerts")["thresholds_usd"] == [2.5, 10.0]
    before = server.counts()
    for bad in ({"thresholds_usd": [0]}, {"thresholds_usd": [-1]}, {"low_balance_pct": 101}):
        with pytest.raises(RymiError) as caught:
            client.billing.set_alerts(**bad)
        assert caught.value.status == 400
    assert server.counts() == before
    assert client._client.get("/billing/alerts")["email_enabled"] is False


async def test_admin_top_up(server: ApiServer, http: aiohttp.ClientSession) -> None:
    account = await server.call(server._account("topup"))
    url = f"{server.v1}/admin/tenants/{account.tenant_id}/top-up"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.post(url, json={"amount_usd": "12.50"}, headers=admin) as r:
        assert r.status == 200
        assert await r.json() == {
            "tenant_id": account.tenant_id,
            "amount_usd": 12.5,
            "balance_usd": 12.5,
        }
    assert await server.call(server.ledger.balance_micros(account.tenant_id)) == 12_500_000
    before = await server.call(server.ledger.balance_micros(account.tenant_id))
    refusals = [
        (headers(account), {"amount_usd": "5"}, 401),  # a tenant key is not the admin token
        ({"Authorization": "Bearer wrong"}, {"amount_usd": "5"}, 401),
        (admin, {"amount_usd": "-5"}, 400),
        (admin, {"amount_usd": "0.0000001"}, 400),
        (admin, {"amount_usd": "lots"}, 400),
    ]
    for auth, body, status in refusals:
        async with http.post(url, json=body, headers=auth) as r:
            assert r.status == status, body
    async with http.post(
        f"{server.v1}/admin/tenants/no-such-tenant/top-up", json={"amount_usd": 5}, headers=admin
    ) as r:
        assert r.status == 404
    assert await server.call(server.ledger.balance_micros(account.tenant_id)) == before


def test_me_describes_the_key_and_its_carrier(server: ApiServer) -> None:
    from tests.api import carriers as c

    account = server.account()
    client = sdk(server, account)
    me = client._client.get("/auth/me")
    assert me["id"] == account.tenant_id
    assert account.key.startswith(me["api_key_prefix"])
    assert (me["telephony_provider"], me["plivo_connected"]) == (None, False)
    client.telephony.connect("plivo", auth_id=c.PLIVO_ID, auth_token=c.PLIVO_TOKEN)
    me = client._client.get("/auth/me")
    assert (me["telephony_provider"], me["plivo_connected"]) == ("plivo", True)
    assert me["plivo_account_name"] == "Acme Plivo"
