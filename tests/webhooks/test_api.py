"""``/v1/webhooks`` over real HTTP: the official SDK for CRUD, requests for the rest.

Two servers on one database: production mode (URL safety rules on) and development mode
(``http://`` loopback allowed). Refused registrations are 400s that store nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from rymi import Rymi, RymiError

from gateway.api import ApiSettings
from gateway.store.sql.engine import write_tx
from gateway.store.sql.migrate import upgrade
from gateway.webhooks.outbox import Outcome, claim, settle
from tests.api.conftest import Account, ApiServer
from tests.webhooks.conftest import SECRET, finished_call

PUBLIC = "https://93.184.216.34/hooks/rymi"
"""A literal public address: passes the production rules without any DNS lookup."""


@pytest.fixture(scope="module")
def database_url_api(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file for this module's servers."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('webhooks-api')}/api.db"
    asyncio.run(upgrade(url))
    return url


def _server(url: str, dev_mode: bool) -> ApiServer:
    settings = ApiSettings(
        requests_per_minute_per_key=10_000,
        requests_per_minute_per_tenant=10_000,
        webhook_dev_mode=dev_mode,
        webhook_rotation_window_s=3600,
    )
    return ApiServer(url, settings).start()


@pytest.fixture(scope="module")
def prod(database_url_api: str) -> Iterator[ApiServer]:
    """Production mode."""
    server = _server(database_url_api, dev_mode=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dev(database_url_api: str) -> Iterator[ApiServer]:
    """Development mode."""
    server = _server(database_url_api, dev_mode=True)
    yield server
    server.stop()


def sdk(server: ApiServer, account: Account) -> Rymi:
    """The official client for ``account``."""
    return Rymi(api_key=account.key, base_url=server.v1)


def raw(server: ApiServer, account: Account, method: str, path: str, **kw: Any) -> Any:
    """A request the SDK has no method for."""
    headers = {"Authorization": f"Bearer {account.key}"}
    return requests.request(method, server.v1 + path, headers=headers, timeout=10, **kw)


def test_register_list_rotate_delete_with_the_sdk(dev: ApiServer) -> None:
    account = dev.account()
    client = sdk(dev, account)
    created = client.webhooks.create(
        url="http://127.0.0.1:9/hook",
        events=["call.completed", "system.api_key_created"],
        secret=SECRET,
        alert_email="ops@example.com",
    )
    assert created["status"] == "registered"
    webhook_id = created["id"]
    listed = client.webhooks.list()
    assert (listed["total"], listed["offset"], listed["limit"]) == (1, 0, 50)
    [item] = listed["webhooks"]
    assert item["url"] == "http://127.0.0.1:9/hook"
    assert item["events"] == ["call.completed", "system.api_key_created"]
    assert item["rotating_until"] is None
    assert "secret" not in item
    new_secret = "whsec_" + "r" * 40
    updated = client.webhooks.update(webhook_id, secret=new_secret, events=["call.completed"])
    assert updated == {"status": "updated", "id": webhook_id}
    one = raw(dev, account, "GET", f"/webhooks/{webhook_id}")
    assert one.status_code == 200
    assert one.json()["rotating_until"] is not None
    assert one.json()["events"] == ["call.completed"]
    for text in (one.text, requests.get(dev.v1 + "/openapi.json", timeout=10).text):
        assert SECRET not in text
        assert new_secret not in text
    assert client.webhooks.delete(webhook_id) == {"status": "deleted", "id": webhook_id}
    assert client.webhooks.list()["webhooks"] == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"url": "http://93.184.216.34/x"}, "expected https://"),
        ({"url": "http://127.0.0.1:9/x"}, "expected https://"),  # loopback http: dev only
        ({"url": "https://127.0.0.1/x"}, "private, loopback or link-local"),
        ({"url": "https://localhost/x"}, "private, loopback or link-local"),
        ({"url": "https://10.1.2.3/x"}, "private, loopback or link-local"),
        ({"url": "https://169.254.169.254/latest"}, "private, loopback or link-local"),
        ({"url": "https://[::ffff:192.168.1.1]/x"}, "private, loopback or link-local"),
        ({"url": "https://100.64.0.1/x"}, "private, loopback or link-local"),
        ({"url": "https://no-such-host.invalid/x"}, "does not resolve"),
        ({"url": "ftp://93.184.216.34/x"}, "expected https://"),
        ({"url": "https://user:pw@93.184.216.34/x"}, "no user name"),
        ({"events": ["call.completed", "call.teleported"]}, "unknown event"),
        ({"events": []}, "events"),
        ({"secret": "too-short"}, "secret"),
        ({"secret": "x" * 257}, "secret"),
        ({"alert_email": "nobody"}, "alert_email"),
    ],
    ids=str,
)
def test_refused_registrations_are_400_and_store_nothing(
    prod: ApiServer, body: dict[str, Any], fragment: str
) -> None:
    account = prod.account()
    before = prod.counts()
    payload = {"url": PUBLIC, "events": ["call.completed"], "secret": SECRET} | body
    response = raw(prod, account, "POST", "/webhooks", json=payload)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]
    assert SECRET not in response.text
    assert prod.counts() == before


def test_production_accepts_a_public_address_and_dev_only_loopback_http(
    prod: ApiServer, dev: ApiServer
) -> None:
    account = prod.account()
    created = sdk(prod, account).webhooks.create(
        url=PUBLIC, events=["call.completed"], secret=SECRET
    )
    assert created["url"] == PUBLIC
    with pytest.raises(RymiError) as caught:
        sdk(dev, account).webhooks.create(
            url="http://93.184.216.34/x", events=["call.completed"], secret=SECRET
        )
    assert caught.value.status == 400
    with pytest.raises(RymiError) as caught:
        sdk(prod, account).webhooks.update(created["id"], url="https://10.0.0.1/x")
    assert caught.value.status == 400
    assert sdk(prod, account).webhooks.list()["webhooks"][0]["url"] == PUBLIC


def test_another_tenants_webhook_is_404(prod: ApiServer) -> None:
    owner, stranger = prod.account("owner"), prod.account("stranger")
    webhook_id = sdk(prod, owner).webhooks.create(
        url=PUBLIC, events=["call.completed"], secret=SECRET
    )["id"]
    client = sdk(prod, stranger)
    with pytest.raises(RymiError) as caught:
        client.webhooks.update(webhook_id, secret="y" * 20)
    assert caught.value.status == 404
    with pytest.raises(RymiError) as caught:
        client.webhooks.delete(webhook_id)
    assert caught.value.status == 404
    for method, path in [
        ("GET", f"/webhooks/{webhook_id}"),
        ("GET", f"/webhooks/{webhook_id}/deliveries"),
        ("POST", f"/webhooks/{webhook_id}/deliveries/dlv_x/replay"),
    ]:
        assert raw(prod, stranger, method, path).status_code == 404
    assert client.webhooks.list()["webhooks"] == []
    assert len(sdk(prod, owner).webhooks.list()["webhooks"]) == 1


def test_deliveries_are_listed_and_a_dead_letter_is_replayed(prod: ApiServer) -> None:
    account = prod.account()
    webhook_id = sdk(prod, account).webhooks.create(
        url=PUBLIC, events=["call.completed"], secret=SECRET
    )["id"]

    async def dead_letter() -> str:
        call_id = await finished_call(prod.ledger, account.tenant_id)
        now = prod.ledger.clock() + 1
        async with write_tx(prod.engine) as conn:
            mine = [c for c in await claim(conn, now, 5000, 1000) if c.endpoint_id == webhook_id]
            failed = Outcome(now, 3000, None, "timeout", "no answer within 3 s")
            await settle(conn, mine[0], failed, next_attempt_at_ms=None, now_ms=now)
        return call_id

    prod.run(dead_letter())
    listed = raw(prod, account, "GET", f"/webhooks/{webhook_id}/deliveries").json()
    [dead] = listed["deliveries"]
    assert (dead["status"], dead["event_type"], listed["total"]) == ("dead", "call.completed", 1)
    assert [(a["attempt"], a["outcome"]) for a in dead["attempts"]] == [(1, "timeout")]
    replay = raw(prod, account, "POST", f"/webhooks/{webhook_id}/deliveries/{dead['id']}/replay")
    assert replay.status_code == 202
    queued = replay.json()
    assert (queued["status"], queued["replay_of"], queued["event_id"]) == (
        "queued",
        dead["id"],
        dead["event_id"],
    )
    pending = raw(prod, account, "GET", f"/webhooks/{webhook_id}/deliveries?status=pending").json()
    assert [d["id"] for d in pending["deliveries"]] == [queued["id"]]
    again = raw(prod, account, "POST", f"/webhooks/{webhook_id}/deliveries/{queued['id']}/replay")
    assert again.status_code == 409
