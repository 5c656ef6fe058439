"""Authentication, the error body, and the request rate limits."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import requests
from rymi import Rymi, RymiError

from gateway.api import ApiSettings
from gateway.store.models import KeyKind
from tests.api.conftest import ApiServer

DATA_ENDPOINTS = [
    ("GET", "/numbers"),
    ("GET", "/agents"),
    ("GET", "/calls"),
    ("GET", "/calls/active"),
    ("GET", "/billing/balance"),
    ("GET", "/billing/agent-roles"),
    ("GET", "/telephony/status"),
    ("GET", "/auth/api-keys"),
    ("POST", "/numbers"),
    ("POST", "/telephony/validate"),
]


def test_sdk_with_a_secret_key_reads_its_account(server: ApiServer) -> None:
    account = server.account()
    client = Rymi(api_key=account.key, base_url=server.v1)
    assert client.numbers.list() == {"numbers": [], "total": 0, "offset": 0, "limit": 50}
    assert client.telephony.status()["connected"] is False


@pytest.mark.parametrize(("method", "path"), DATA_ENDPOINTS)
async def test_no_key_is_401_with_the_error_body(
    server: ApiServer, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    async with http.request(method, server.v1 + path) as response:
        assert response.status == 401
        assert await response.json() == {
            "error": "Unauthorized",
            "code": "missing_api_key",
            "message": "send Authorization: Bearer <secret key>",
        }


@pytest.mark.parametrize("prefix", ["sb_publishable_", "rymi_pk_"])
@pytest.mark.parametrize(("method", "path"), DATA_ENDPOINTS)
async def test_publishable_keys_get_401_on_every_data_endpoint(
    server: ApiServer, http: aiohttp.ClientSession, prefix: str, method: str, path: str
) -> None:
    headers = {"Authorization": f"Bearer {prefix}abcdefghijklmnopqrstuvwxyz"}
    async with http.request(method, server.v1 + path, headers=headers) as response:
        assert response.status == 401
        assert (await response.json())["code"] == "publishable_key_not_allowed"


def test_a_real_publishable_key_is_refused(server: ApiServer) -> None:
    account = server.account()

    async def publishable() -> str:
        agent = await server.directory.create_agent(account.tenant_id, name="web")
        created = await server.directory.create_api_key(
            account.tenant_id, KeyKind.PUBLISHABLE, agent_id=agent.id
        )
        return created.plaintext.reveal()

    key = server.run(publishable())
    assert key.startswith("sb_publishable_")
    with pytest.raises(RymiError) as caught:
        Rymi(api_key=key, base_url=server.v1).agents.list()
    assert (caught.value.status, caught.value.code) == (401, "publishable_key_not_allowed")


def test_unknown_key_is_401(server: ApiServer) -> None:
    with pytest.raises(RymiError) as caught:
        Rymi(api_key="rymi_" + "x" * 40, base_url=server.v1).numbers.list()
    assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")


async def test_wrong_scheme_is_401(server: ApiServer, http: aiohttp.ClientSession) -> None:
    account = server.account()
    headers = {"Authorization": f"Basic {account.key}"}
    async with http.get(server.v1 + "/numbers", headers=headers) as response:
        assert response.status == 401


def test_providers_and_openapi_need_no_key(server: ApiServer) -> None:
    providers = requests.get(server.v1 + "/telephony/providers", timeout=5)
    assert providers.status_code == 200
    assert [p["id"] for p in providers.json()["providers"]] == ["plivo", "twilio", "vonage"]
    document = requests.get(server.v1 + "/openapi.json", timeout=5).json()
    assert document["openapi"] == "3.1.0"


async def test_unknown_path_and_method_get_the_error_body(
    server: ApiServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.v1 + "/nothing-here") as response:
        assert response.status == 404
        assert await response.json() == {"error": "Not found", "code": "not_found"}
    async with http.delete(server.v1 + "/telephony/providers") as response:
        assert response.status == 405
        assert (await response.json())["code"] == "method_not_allowed"
        assert "GET" in response.headers["Allow"]


def test_per_key_rate_limit_gives_429_with_retry_after(make_server: Any) -> None:
    api: ApiServer = make_server(
        ApiSettings(requests_per_minute_per_key=3, requests_per_minute_per_tenant=100)
    )
    account = api.account()
    headers = {"Authorization": f"Bearer {account.key}"}
    statuses = [
        requests.get(api.v1 + "/numbers", headers=headers, timeout=5).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    refused = requests.get(api.v1 + "/numbers", headers=headers, timeout=5)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Another key of the same tenant has its own per-key budget.
    other = api.run(api.directory.create_api_key(account.tenant_id))
    fresh = {"Authorization": f"Bearer {other.plaintext.reveal()}"}
    assert requests.get(api.v1 + "/numbers", headers=fresh, timeout=5).status_code == 200


def test_per_tenant_rate_limit_covers_all_its_keys(make_server: Any) -> None:
    api: ApiServer = make_server(
        ApiSettings(requests_per_minute_per_key=100, requests_per_minute_per_tenant=4)
    )
    account = api.account()
    second = api.run(api.directory.create_api_key(account.tenant_id)).plaintext.reveal()
    keys = [account.key, second] * 2
    for key in keys:
        assert _get(api, "/numbers", key).status_code == 200
    refused = _get(api, "/numbers", second)
    assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")
    assert "Retry-After" in refused.headers
    other = api.account("other")  # another tenant is not affected
    assert _get(api, "/numbers", other.key).status_code == 200


def test_coordination_down_limiter_fails_open_credential_checks_fail_closed(
    make_server: Any,
) -> None:
    from tests.api.carriers import PLIVO_ID, PLIVO_TOKEN

    api: ApiServer = make_server(ApiSettings())
    account = api.account()
    api.run(api.coordination.close())
    # Request limits cannot be counted: requests still go through (logged).
    assert _get(api, "/numbers", account.key).status_code == 200
    # Credential checks exist to stop guessing: without their counter they are refused.
    body = {"provider": "plivo", "auth_id": PLIVO_ID, "auth_token": PLIVO_TOKEN}
    refused = requests.post(
        f"{api.v1}/telephony/validate",
        json=body,
        headers={"Authorization": f"Bearer {account.key}"},
        timeout=5,
    )
    assert (refused.status_code, refused.json()["code"]) == (503, "coordination_unavailable")
    assert api.carriers.hits["plivo"] == 0


async def test_oversized_and_malformed_bodies(
    server: ApiServer, http: aiohttp.ClientSession
) -> None:
    account = await server.call(server._account("body"))
    headers = {"Authorization": f"Bearer {account.key}", "Content-Type": "application/json"}
    huge = b'{"name": "' + b"x" * 70_000 + b'"}'
    async with http.post(f"{server.v1}/agents", data=huge, headers=headers) as response:
        assert response.status == 413
        assert (await response.json())["code"] == "payload_too_large"
    async with http.post(f"{server.v1}/agents", data=b"{not json", headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["code"] == "invalid_json"
    async with http.post(f"{server.v1}/agents", data=b"[1, 2]", headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["code"] == "invalid_request"


def _get(api: ApiServer, path: str, key: str) -> requests.Response:
    return requests.get(f"{api.v1}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=5)
