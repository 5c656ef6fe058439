"""The public API is served by the gateway itself under /v1, from the same stores."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.server.harness import NUMBER, running_gateway


async def test_gateway_serves_v1_from_its_own_stores(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        tenant, agent = await gw.tenant("twilio")
        key = await gw.engine.state.directory.create_api_key(tenant.id, label="t")
        auth = {"Authorization": f"Bearer {key.plaintext.reveal()}"}

        async with http.get(f"{gw.base}/v1/openapi.json") as response:
            assert response.status == 200
            assert (await response.json())["openapi"].startswith("3.")
        async with http.get(f"{gw.base}/v1/numbers", headers=auth) as response:
            assert response.status == 200
            numbers = (await response.json())["numbers"]
        assert [(n["phone_number"], n["agent_id"]) for n in numbers] == [(NUMBER, agent.id)]
        async with http.get(f"{gw.base}/v1/numbers") as response:
            assert response.status == 401
            assert (await response.json())["code"]


async def test_admin_routes_use_the_configured_admin_token(tmp_path: Path) -> None:
    token = "a" * 40
    async with running_gateway(tmp_path, admin_token=token) as gw, aiohttp.ClientSession() as http:
        tenant, _ = await gw.tenant("twilio", credit_micros=0)
        url = f"{gw.base}/v1/admin/tenants/{tenant.id}/top-up"
        async with http.post(url, json={"amount_usd": 2.5}) as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(url, json={"amount_usd": 2.5}, headers=headers) as response:
            assert response.status == 200, await response.text()
        assert await gw.engine.state.ledger.balance_micros(tenant.id) == 2_500_000
