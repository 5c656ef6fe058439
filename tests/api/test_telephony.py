"""``/v1/telephony``: validate, connect, status, carrier numbers, disconnect.

The carriers' REST APIs are local stand-ins (:mod:`tests.api.carriers`) that check each
carrier's auth; nothing leaves the machine.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from rymi import Rymi, RymiError

from gateway.api import ApiSettings
from gateway.store.models import PlivoCredentials, TwilioCredentials, VonageCredentials
from gateway.store.sql import schema
from tests.api import carriers as c
from tests.api.conftest import Account, ApiServer

TWILIO = {"provider": "twilio", "auth_id": c.TWILIO_SID, "auth_token": c.TWILIO_TOKEN}
PLIVO = {"provider": "plivo", "auth_id": c.PLIVO_ID, "auth_token": c.PLIVO_TOKEN}
VONAGE = {
    "provider": "vonage",
    "api_key": c.VONAGE_KEY,
    "api_secret": c.VONAGE_SECRET,
    "signature_secret": "sig-secret-0001",
}


def sdk(server: ApiServer, account: Account) -> Rymi:
    return Rymi(api_key=account.key, base_url=server.v1)


def auth(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.key}"}


async def credential_rows(server: ApiServer, tenant_id: str) -> list[Any]:
    table = schema.carrier_credentials
    async with server.engine.connect() as conn:
        rows = await conn.execute(sa.select(table).where(table.c.tenant_id == tenant_id))
        return list(rows)


def test_providers_catalog_shapes(server: ApiServer) -> None:
    import requests

    providers = requests.get(f"{server.v1}/telephony/providers", timeout=5).json()["providers"]
    vonage = next(p for p in providers if p["id"] == "vonage")
    assert vonage["displayName"] == "Vonage"
    assert vonage["credentialFields"] == [
        {"name": "api_key", "label": "API Key", "required": True},
        {"name": "api_secret", "label": "API Secret", "required": True, "secret": True},
        {
            "name": "signature_secret",
            "label": "Signature Secret",
            "required": False,
            "secret": True,
        },
    ]


@pytest.mark.parametrize(
    ("body", "name"),
    [(TWILIO, "Acme Twilio"), (PLIVO, "Acme Plivo"), (VONAGE, f"Vonage {c.VONAGE_KEY}")],
)
async def test_validate_checks_with_the_carrier_and_stores_nothing(
    server: ApiServer, http: aiohttp.ClientSession, body: dict[str, str], name: str
) -> None:
    account = await server.call(server._account("validate"))
    async with http.post(f"{server.v1}/telephony/validate", json=body, headers=auth(account)) as r:
        assert r.status == 200
        assert await r.json() == {"valid": True, "accountName": name}
    wrong = {**body, ("auth_token" if "auth_token" in body else "api_secret"): "wrong-secret-999"}
    async with http.post(f"{server.v1}/telephony/validate", json=wrong, headers=auth(account)) as r:
        assert r.status == 200
        assert await r.json() == {"valid": False, "error": "credentials rejected by the carrier"}
    assert await server.call(credential_rows(server, account.tenant_id)) == []
    tenant = await server.call(server.directory.get_tenant(account.tenant_id))
    assert tenant.active_carrier is None


async def test_validate_is_limited_to_3_per_window_per_tenant(
    server: ApiServer, http: aiohttp.ClientSession
) -> None:
    account = await server.call(server._account("limit"))
    url = f"{server.v1}/telephony/validate"
    hits_before = server.carriers.hits["twilio"]
    for _ in range(3):
        async with http.post(url, json=TWILIO, headers=auth(account)) as r:
            assert r.status == 200
    async with http.post(url, json=TWILIO, headers=auth(account)) as r:
        assert r.status == 429
        assert (await r.json())["code"] == "too_many_attempts"
        assert 1 <= int(r.headers["Retry-After"]) <= 300
    assert server.carriers.hits["twilio"] - hits_before == 3  # the 4th never reached it
    # Another tenant has its own budget; a malformed body costs no attempt.
    other = await server.call(server._account("other"))
    async with http.post(url, json={"provider": "twilio"}, headers=auth(other)) as r:
        assert r.status == 400
    async with http.post(url, json=TWILIO, headers=auth(other)) as r:
        assert r.status == 200


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "telnyx", "auth_id": "x", "auth_token": "y"},
        {"provider": "twilio", "auth_token": c.TWILIO_TOKEN},
        {"provider": "twilio", "auth_id": "not-a-sid", "auth_token": c.TWILIO_TOKEN},
        {"provider": "vonage", "api_key": c.VONAGE_KEY},
        {"auth_id": c.PLIVO_ID, "auth_token": c.PLIVO_TOKEN},
        {"provider": "plivo", "auth_id": c.PLIVO_ID, "auth_token": "short"},
    ],
)
def test_connect_bad_requests_are_400_and_store_nothing(
    server: ApiServer, body: dict[str, str]
) -> None:
    account = server.account()
    before = server.counts()
    client = sdk(server, account)

    def send() -> object:
        if "provider" in body:
            return client.telephony.connect(**body)
        return client._client.post("/telephony/connect", json=body)  # connect() needs one

    with pytest.raises(RymiError) as caught:
        send()
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
    assert server.counts() == before


def test_connect_each_carrier_stores_sealed_credentials(server: ApiServer) -> None:
    account = server.account()
    client = sdk(server, account)
    result = client.telephony.connect(**TWILIO)
    assert result["status"] == "connected"
    assert (result["provider"], result["account_name"]) == ("twilio", "Acme Twilio")
    assert client.telephony.status() == {
        "connected": True,
        "provider": "twilio",
        "account_name": "Acme Twilio",
        "account_country": None,
    }
    opened = server.run(server.directory.carrier_credentials(account.tenant_id))
    assert isinstance(opened, TwilioCredentials)
    assert opened.auth_token.reveal() == c.TWILIO_TOKEN
    (row,) = server.run(credential_rows(server, account.tenant_id))
    assert c.TWILIO_TOKEN.encode() not in row.secret_ciphertext
    # One active carrier: connecting Vonage replaces Twilio.
    client.telephony.connect(**VONAGE)
    assert client.telephony.status()["provider"] == "vonage"
    rows = server.run(credential_rows(server, account.tenant_id))
    assert [r.carrier for r in rows] == ["vonage"]
    vonage = server.run(server.directory.carrier_credentials(account.tenant_id))
    assert isinstance(vonage, VonageCredentials)
    assert vonage.signature_secret is not None
    assert client.telephony.disconnect() == {
        "status": "disconnected",
        "message": "Telephony disconnected.",
    }
    assert client.telephony.status()["connected"] is False
    assert server.run(credential_rows(server, account.tenant_id)) == []


def test_connect_with_rejected_credentials_is_401_and_keeps_the_old_carrier(
    server: ApiServer,
) -> None:
    account = server.account()
    client = sdk(server, account)
    client.telephony.connect(**PLIVO)
    with pytest.raises(RymiError) as caught:
        client.telephony.connect(**{**TWILIO, "auth_token": "not-the-token-1"})
    assert (caught.value.status, caught.value.code) == (401, "carrier_auth_failed")
    assert "not-the-token-1" not in str(caught.value)
    opened = server.run(server.directory.carrier_credentials(account.tenant_id))
    assert isinstance(opened, PlivoCredentials)


def test_connect_when_the_carrier_is_down_is_502(server: ApiServer) -> None:
    account = server.account()
    server.carriers.failing = True
    try:
        with pytest.raises(RymiError) as caught:
            sdk(server, account).telephony.connect(**PLIVO)
    finally:
        server.carriers.failing = False
    assert (caught.value.status, caught.value.code) == (502, "carrier_unavailable")
    assert server.run(credential_rows(server, account.tenant_id)) == []


def test_connect_attempts_are_limited_too(make_server: Any) -> None:
    api: ApiServer = make_server(ApiSettings(credential_attempts=1))
    account = api.account()
    client = sdk(api, account)
    client.telephony.connect(**PLIVO)
    with pytest.raises(RymiError) as caught:
        client.telephony.connect(**TWILIO)
    assert (caught.value.status, caught.value.code) == (429, "too_many_attempts")
    assert api.run(api.directory.carrier_account(account.tenant_id)).carrier == "plivo"  # type: ignore[union-attr]


def test_connect_storage_failure_is_500_and_stores_nothing(make_server: Any) -> None:
    api: ApiServer = make_server(ApiSettings())
    account = api.account()

    async def break_storage() -> None:
        # A real failure inside the write: SQLite aborts the INSERT, the transaction
        # rolls back (no credential row, the tenant's active carrier unchanged).
        async with api.engine.begin() as conn:
            await conn.exec_driver_sql(
                "CREATE TRIGGER fail_credentials BEFORE INSERT ON carrier_credentials "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )

    async def repair_storage() -> None:
        async with api.engine.begin() as conn:
            await conn.exec_driver_sql("DROP TRIGGER fail_credentials")

    api.run(break_storage())
    try:
        with pytest.raises(RymiError) as caught:
            sdk(api, account).telephony.connect(**TWILIO)
    finally:
        api.run(repair_storage())
    assert (caught.value.status, caught.value.code) == (500, "storage_error")
    assert "disk full" not in str(caught.value)
    assert api.run(credential_rows(api, account.tenant_id)) == []
    assert api.run(api.directory.get_tenant(account.tenant_id)).active_carrier is None


@pytest.mark.parametrize(
    ("body", "numbers"),
    [(TWILIO, c.TWILIO_NUMBERS), (PLIVO, c.PLIVO_NUMBERS), (VONAGE, c.VONAGE_NUMBERS)],
)
def test_carrier_numbers_are_read_from_the_carrier_account(
    server: ApiServer, body: dict[str, str], numbers: list[str]
) -> None:
    account = server.account()
    client = sdk(server, account)
    with pytest.raises(RymiError) as caught:
        client.telephony.numbers()
    assert (caught.value.status, caught.value.code) == (404, "carrier_not_connected")
    client.telephony.connect(**body)
    agent = client.agents.create("desk")
    listed = client.telephony.numbers()["numbers"]
    assert [n["phone_number"] for n in listed] == numbers
    assert {n["provider"] for n in listed} == {body["provider"]}
    assert all(n["backend_agent_id"] is None for n in listed)
    if body is TWILIO:
        assert listed[1]["id"] == f"PN{1:032d}"
        assert listed[0]["number_status"] == "in-use"
    # A number registered here shows the agent it is attached to (only this test
    # registers the stand-in carriers' numbers, and it removes them again).
    client.numbers.register(numbers[0], agent_id=agent["id"])
    try:
        assert client.telephony.numbers()["numbers"][0]["backend_agent_id"] == agent["id"]
    finally:
        client.numbers.remove(numbers[0])


def test_status_and_numbers_are_isolated(server: ApiServer) -> None:
    alice, bob = server.account("alice"), server.account("bob")
    sdk(server, alice).telephony.connect(**PLIVO)
    bob_client = sdk(server, bob)
    assert bob_client.telephony.status() == {
        "connected": False,
        "provider": None,
        "account_name": None,
        "account_country": None,
    }
    with pytest.raises(RymiError) as caught:
        bob_client.telephony.numbers()
    assert caught.value.status == 404
    bob_client.telephony.disconnect()
    assert sdk(server, alice).telephony.status()["connected"] is True


def test_admin_endpoints_are_off_without_a_token(make_server: Any) -> None:
    import requests

    api: ApiServer = make_server(ApiSettings(admin_token=None))
    account = api.account()
    response = requests.post(
        f"{api.v1}/admin/tenants/{account.tenant_id}/top-up",
        json={"amount_usd": "5"},
        headers={"Authorization": "Bearer anything"},
        timeout=5,
    )
    assert response.status_code == 401
    assert response.json()["code"] == "admin_disabled"
    assert api.run(api.ledger.balance_micros(account.tenant_id)) == 0
