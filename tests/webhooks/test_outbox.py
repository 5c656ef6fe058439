"""The outbox on SQLite and PostgreSQL: written with its cause, claimed by one at a time.

Every test runs once per backend (the store suites' ``engine`` fixture).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConflictError, NotFoundError, SecretError, ValidationError
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.models import CallEnd, CallStatus, KeyKind
from gateway.store.secrets import Keyring, rotate
from gateway.store.sql import schema
from gateway.store.sql.engine import create_engine, write_tx
from gateway.webhooks import outbox
from gateway.webhooks.endpoints import WebhookStore
from gateway.webhooks.outbox import Outcome, claim, settle
from tests.store.conftest import KEY_A, KEY_B, random_number, row_counts
from tests.webhooks.conftest import SECRET, finished_call, opened_call, tenant_with_endpoint

URL = "https://hooks.example.com/rymi"
ALL = [
    "call.completed",
    "agent.number_assigned",
    "system.api_key_created",
    "system.api_key_revoked",
    "billing.low_balance",
    "billing.balance_depleted",
]


async def events_of(engine: AsyncEngine, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's outbox events (parsed bodies), oldest first."""
    ev = schema.webhook_events.c
    query = sa.select(ev.body).where(ev.tenant_id == tenant_id).order_by(ev.created_at_ms, ev.id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [json.loads(row.body) for row in rows]


async def deliveries_of(engine: AsyncEngine, event_id: str) -> list[str]:
    """Endpoint ids of an event's deliveries."""
    d = schema.webhook_deliveries.c
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(d.endpoint_id).where(d.event_id == event_id))).all()
    return sorted(str(row.endpoint_id) for row in rows)


async def test_call_completed_is_fanned_out_to_subscribers_only(
    directory: Directory, ledger: Ledger, keyring: Keyring
) -> None:
    tenant, first = await tenant_with_endpoint(directory, keyring, URL)
    store = WebhookStore(directory.engine, keyring)
    second = (await store.create(tenant, URL + "/2", ["call.completed", "auth.welcome"], SECRET)).id
    await store.create(tenant, URL + "/3", ["system.api_key_created"], SECRET)
    call_id = await finished_call(ledger, tenant, audio_ms=45_000, lines=["hi", "bye"])
    [event] = await events_of(directory.engine, tenant)
    record = await ledger.get_call(call_id)
    assert set(event) == {"type", "event", "id", "timestamp", "data"}
    assert (event["type"], event["event"]) == ("call.completed", "call.completed")
    assert event["id"].startswith("evt_")
    data = event["data"]
    assert set(data) == {
        "call_id", "agent_id", "number", "carrier", "direction", "status", "end_reason",
        "duration", "billable_seconds", "cost", "transcript", "started_at", "ended_at",
    }  # fmt: skip
    assert data["call_id"] == call_id
    assert (data["status"], data["end_reason"], data["direction"]) == (
        "completed",
        "caller_hangup",
        "inbound",
    )
    assert (data["duration"], data["billable_seconds"], data["cost"]) == (45.0, 60, 0.05)
    assert data["number"] == record.number
    assert [(t["speaker"], t["text"]) for t in data["transcript"]] == [
        ("caller", "hi"),
        ("caller", "bye"),
    ]
    assert data["ended_at"].endswith("Z")
    assert await deliveries_of(directory.engine, event["id"]) == sorted([first, second])


async def test_no_subscriber_means_no_outbox_rows(
    directory: Directory, ledger: Ledger, keyring: Keyring
) -> None:
    tenant, _ = await tenant_with_endpoint(directory, keyring, URL, events=["auth.welcome"])
    before = await row_counts(directory.engine)
    await finished_call(ledger, tenant)
    after = await row_counts(directory.engine)
    assert after["webhook_events"] == before["webhook_events"]
    assert after["webhook_deliveries"] == before["webhook_deliveries"]


async def test_a_failure_inside_finalize_leaves_neither_record_nor_event(
    directory: Directory, ledger: Ledger, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, _ = await tenant_with_endpoint(directory, keyring, URL)
    await ledger.top_up(tenant, 1_000_000)
    real = outbox._insert_deliveries

    async def broken(*args: Any) -> None:
        await real(*args)  # the rows are written, then the transaction fails
        raise RuntimeError("injected failure after the outbox insert")

    monkeypatch.setattr(outbox, "_insert_deliveries", broken)
    with pytest.raises(RuntimeError, match="injected"):
        await finished_call(ledger, tenant)
    [call] = await ledger.list_calls(tenant)
    assert call.status is CallStatus.LIVE
    assert await ledger.balance_micros(tenant) == 1_000_000
    assert await events_of(directory.engine, tenant) == []
    monkeypatch.setattr(outbox, "_insert_deliveries", real)
    end = CallEnd(call.id, CallStatus.COMPLETED, "caller_hangup", call.answered_at_ms + 1000, 1000)
    assert (await ledger.finalize(end)).won
    assert [e["data"]["call_id"] for e in await events_of(directory.engine, tenant)] == [call.id]


async def test_racing_finalizers_emit_one_event(
    directory: Directory, ledger: Ledger, keyring: Keyring
) -> None:
    tenant, _ = await tenant_with_endpoint(directory, keyring, URL)
    call_id = await opened_call(ledger, tenant)
    end = CallEnd(call_id, CallStatus.FAILED, "gateway_lost", ledger.clock(), 1000)
    results = await asyncio.gather(*(ledger.finalize(end) for _ in range(8)))
    assert sum(r.won for r in results) == 1
    [event] = await events_of(directory.engine, tenant)
    assert event["data"]["call_id"] == call_id


async def test_key_and_number_events_commit_with_their_cause(
    directory: Directory, keyring: Keyring
) -> None:
    tenant, endpoint = await tenant_with_endpoint(directory, keyring, URL, events=ALL)
    created = await directory.create_api_key(tenant, KeyKind.SECRET, label="ci")
    await directory.revoke_api_key(tenant, created.key.id)
    with pytest.raises(NotFoundError):
        await directory.revoke_api_key(tenant, created.key.id)  # already revoked: no event
    one = await directory.create_agent(tenant, name="one")
    two = await directory.create_agent(tenant, name="two")
    number = random_number()
    await directory.add_number(tenant, number, one.id)
    await directory.add_number(tenant, number, one.id)  # same agent again: nothing new
    await directory.attach_number(tenant, number, two.id)
    await directory.attach_number(tenant, number, None)  # detaching is not an assignment
    events = await events_of(directory.engine, tenant)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:  # events of one millisecond have no order: group them by type
        by_type.setdefault(event["type"], []).append(event["data"])
    key_data = {
        "key_id": created.key.id,
        "key_prefix": created.key.key_prefix,
        "kind": "secret",
        "label": "ci",
    }
    assert by_type.pop("system.api_key_created") == [key_data]
    assert by_type.pop("system.api_key_revoked") == [key_data]
    assigned = sorted(by_type.pop("agent.number_assigned"), key=lambda d: d["agent_id"] == two.id)
    assert assigned == [
        {"number": number, "agent_id": one.id, "previous_agent_id": None},
        {"number": number, "agent_id": two.id, "previous_agent_id": one.id},
    ]
    assert by_type == {}
    assert created.plaintext.reveal() not in json.dumps(events)
    for event in events:
        assert await deliveries_of(directory.engine, event["id"]) == [endpoint]


async def test_billing_alerts_fire_when_a_debit_crosses_them(
    directory: Directory, ledger: Ledger, keyring: Keyring
) -> None:
    tenant, _ = await tenant_with_endpoint(directory, keyring, URL, events=ALL[4:])
    await ledger.top_up(tenant, 120_000)  # $0.12
    await ledger.set_alerts(
        tenant, thresholds_micros=[100_000, 50_000], low_balance_pct=None, email_enabled=False
    )
    await finished_call(ledger, tenant, audio_ms=30_000)  # $0.025: 0.12 -> 0.095
    await finished_call(ledger, tenant, audio_ms=30_000)  # 0.095 -> 0.07: crosses nothing
    await finished_call(ledger, tenant, audio_ms=90_000)  # $0.075: 0.07 -> -0.005
    events = await events_of(directory.engine, tenant)
    summary = [
        (e["type"], e["data"].get("threshold_usd"), e["data"]["balance_usd"]) for e in events
    ]
    assert summary[0] == ("billing.low_balance", 0.1, 0.095)
    # Events of one transaction share a timestamp: compare them as a set.
    assert sorted(summary[1:], key=str) == [
        ("billing.balance_depleted", None, -0.005),
        ("billing.low_balance", 0.05, -0.005),
    ]


async def test_claims_are_exclusive_across_engines(
    directory: Directory, ledger: Ledger, keyring: Keyring, database_url: str
) -> None:
    tenant, endpoint = await tenant_with_endpoint(directory, keyring, URL)
    for _ in range(12):
        await finished_call(ledger, tenant, audio_ms=0)
    engines = [create_engine(database_url) for _ in range(4)]

    async def claimer(engine: AsyncEngine) -> list[str]:
        mine: list[str] = []
        while True:
            async with write_tx(engine) as conn:
                got = await claim(conn, ledger.clock(), 60_000, limit=2)
            if not got:
                return mine
            mine += [c.delivery_id for c in got if c.endpoint_id == endpoint]
            await asyncio.sleep(0)

    try:
        results = await asyncio.gather(*(claimer(e) for e in engines))
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))
    claimed = [d for r in results for d in r]
    assert len(claimed) == len(set(claimed)) == 12


async def test_an_expired_lease_is_claimed_again_and_the_old_claimant_loses(
    directory: Directory, ledger: Ledger, keyring: Keyring
) -> None:
    tenant, endpoint = await tenant_with_endpoint(directory, keyring, URL)
    await finished_call(ledger, tenant)
    engine = directory.engine
    now = ledger.clock() + 1
    async with write_tx(engine) as conn:
        first = [c for c in await claim(conn, now, 10, limit=1000) if c.endpoint_id == endpoint]
    async with write_tx(engine) as conn:  # still leased: nobody else gets it
        assert [c for c in await claim(conn, now + 5, 10, 1000) if c.endpoint_id == endpoint] == []
    async with write_tx(engine) as conn:  # the claimant "died": its lease ran out
        second = [c for c in await claim(conn, now + 11, 10, 1000) if c.endpoint_id == endpoint]
    assert [c.attempt for c in first + second] == [1, 2]
    assert first[0].event_id == second[0].event_id
    ok = Outcome(now, 5, 200, "success")
    async with write_tx(engine) as conn:
        assert await settle(conn, first[0], ok, next_attempt_at_ms=None, now_ms=now) is None
        assert await settle(conn, second[0], ok, next_attempt_at_ms=None, now_ms=now) == "delivered"


async def test_secrets_are_sealed_per_tenant_and_endpoints_isolated(
    directory: Directory, keyring: Keyring
) -> None:
    store = WebhookStore(directory.engine, keyring)
    tenant, endpoint = await tenant_with_endpoint(directory, keyring, URL)
    other, theirs = await tenant_with_endpoint(directory, keyring, URL)
    e = schema.webhook_endpoints.c
    async with directory.engine.connect() as conn:
        row = (
            await conn.execute(sa.select(schema.webhook_endpoints).where(e.id == endpoint))
        ).one()
    sealed = (str(row.secret_key_id), bytes(row.secret_ciphertext))
    assert SECRET.encode() not in sealed[1]
    assert store.open_secret(tenant, endpoint, sealed).reveal() == SECRET
    with pytest.raises(SecretError):
        store.open_secret(other, endpoint, sealed)  # the AAD names the tenant
    with pytest.raises(SecretError):
        store.open_secret(tenant, theirs, sealed)  # and the endpoint
    for attempt in (
        store.get(other, endpoint),
        store.update(other, endpoint, rotation_window_ms=0, url=URL),
        store.delete(other, endpoint),
        store.deliveries(other, endpoint),
        store.replay(other, endpoint, "dlv_x"),
    ):
        with pytest.raises(NotFoundError):
            await attempt
    assert (await store.get(tenant, endpoint)).url == URL


async def test_invalid_registrations_store_nothing(
    directory: Directory, keyring: Keyring, engine: AsyncEngine
) -> None:
    store = WebhookStore(directory.engine, keyring)
    tenant = (await directory.create_tenant("wh-invalid")).id
    before = await row_counts(engine)
    bad: list[tuple[list[str], str, str | None, str]] = [
        (["call.completed", "call.exploded"], SECRET, None, "events"),
        ([], SECRET, None, "events"),
        (["call.completed"], "short", None, "secret"),
        (["call.completed"], "x" * 257, None, "secret"),
        (["call.completed"], SECRET, "not-an-address", "alert_email"),
    ]
    for events, secret, mail, field in bad:
        with pytest.raises(ValidationError) as caught:
            await store.create(tenant, URL, events, secret, mail)
        assert caught.value.field == field
        assert secret not in str(caught.value)
    with pytest.raises(NotFoundError):
        await store.create("no-such-tenant", URL, ["call.completed"], SECRET)
    assert await row_counts(engine) == before


async def test_replay_of_a_pending_delivery_is_a_conflict(
    directory: Directory, ledger: Ledger, keyring: Keyring
) -> None:
    store = WebhookStore(directory.engine, keyring)
    tenant, endpoint = await tenant_with_endpoint(directory, keyring, URL)
    await finished_call(ledger, tenant)
    [delivery], total = await store.deliveries(tenant, endpoint)
    assert (delivery.status, total) == ("pending", 1)
    with pytest.raises(ConflictError):
        await store.replay(tenant, endpoint, delivery.id)
    with pytest.raises(NotFoundError):
        await store.replay(tenant, endpoint, "dlv_missing")


async def test_secrets_rotate_reseals_webhook_secrets(
    directory: Directory, engine: AsyncEngine
) -> None:
    old = Keyring((KEY_B,))
    tenant = (await directory.create_tenant("wh-rotate")).id
    endpoint = (await WebhookStore(engine, old).create(tenant, URL, ["call.completed"], SECRET)).id
    both = Keyring((KEY_A, KEY_B))
    assert (await rotate(engine, both)).unreadable == ()
    e = schema.webhook_endpoints.c
    async with engine.connect() as conn:
        row = (
            await conn.execute(sa.select(schema.webhook_endpoints).where(e.id == endpoint))
        ).one()
    assert row.secret_key_id == both.newest_id
    sealed = (str(row.secret_key_id), bytes(row.secret_ciphertext))
    assert (
        WebhookStore(engine, Keyring((KEY_A,))).open_secret(tenant, endpoint, sealed).reveal()
        == SECRET
    )
