"""Contract tests (SQLite and PostgreSQL) of the store additions the public API uses.

Call pages with cursors and status filters, usage totals, spend-alert settings, the
carrier account's reported name, API key last use, and deleting agents.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import NotFoundError, ValidationError
from gateway.metering import Role
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.models import (
    CallEnd,
    CallStart,
    CallStatus,
    KeyKind,
    PlivoCredentials,
)
from gateway.store.secrets import Secret
from tests.store.conftest import new_call_id, random_number, row_counts

T0 = 1_790_000_000_000


async def _tenant(directory: Directory) -> str:
    return (await directory.create_tenant(f"api-{uuid.uuid4().hex[:8]}")).id


async def _call(ledger: Ledger, tenant_id: str, at_ms: int, audio_ms: int | None) -> str:
    call_id = new_call_id()
    await ledger.open_call(
        CallStart(call_id, tenant_id, "agent", random_number(), "plivo", Role.OPERATOR, 600, at_ms)
    )
    if audio_ms is not None:
        end = CallEnd(call_id, CallStatus.COMPLETED, "user_disconnect", at_ms + audio_ms, audio_ms)
        await ledger.finalize(end)
    return call_id


async def test_pages_walk_every_call_once_newest_first(
    directory: Directory, ledger: Ledger
) -> None:
    tenant = await _tenant(directory)
    # Two calls share an answer time: the id breaks the tie, so the cursor is exact.
    times = [T0, T0 + 1000, T0 + 1000, T0 + 2000, T0 + 3000]
    ids = [await _call(ledger, tenant, at, 1000) for at in times]
    seen: list[str] = []
    cursor = None
    while True:
        page = await ledger.page_calls(tenant, limit=2, cursor=cursor)
        assert page.total == 5
        seen += [c.id for c in page.calls]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 5
    answered = [c.answered_at_ms for c in (await ledger.page_calls(tenant, limit=10)).calls]
    assert answered == sorted(answered, reverse=True)


async def test_pages_filter_by_status_and_stay_in_the_tenant(
    directory: Directory, ledger: Ledger
) -> None:
    tenant, other = await _tenant(directory), await _tenant(directory)
    live = await _call(ledger, tenant, T0, None)
    done = await _call(ledger, tenant, T0 + 1, 5000)
    await _call(ledger, other, T0 + 2, None)
    only_live = await ledger.page_calls(tenant, statuses=[CallStatus.LIVE])
    assert [c.id for c in only_live.calls] == [live]
    assert only_live.total == 1
    finished = await ledger.page_calls(tenant, statuses=[CallStatus.COMPLETED])
    assert [c.id for c in finished.calls] == [done]
    assert (await ledger.page_calls(tenant, statuses=[])).total == 0
    skipped = await ledger.page_calls(tenant, limit=1, offset=1)
    assert [c.id for c in skipped.calls] == [live]


@pytest.mark.parametrize(
    ("limit", "offset", "cursor"),
    [(0, 0, None), (201, 0, None), (10, -1, None), (10, 0, "!!!"), (10, 0, "bm90LWEtY3Vyc29y")],
)
async def test_bad_page_arguments_are_validation_errors(
    directory: Directory, ledger: Ledger, limit: int, offset: int, cursor: str | None
) -> None:
    tenant = await _tenant(directory)
    with pytest.raises(ValidationError):
        await ledger.page_calls(tenant, limit=limit, offset=offset, cursor=cursor)


async def test_usage_since_sums_final_calls_only(directory: Directory, ledger: Ledger) -> None:
    tenant = await _tenant(directory)
    await _call(ledger, tenant, T0, 31_000)  # 2 units, $0.05
    await _call(ledger, tenant, T0 + 10, 1_000)  # 1 unit, $0.025
    await _call(ledger, tenant, T0 + 20, None)  # live: not counted
    await _call(ledger, tenant, T0 - 10**7, 1_000)  # before the period
    usage = await ledger.usage_since(tenant, T0)
    assert (usage.calls, usage.billable_units, usage.cost_micros) == (2, 3, 75_000)


async def test_alerts_round_trip_and_refusals_write_nothing(
    directory: Directory, ledger: Ledger, engine: AsyncEngine
) -> None:
    tenant = await _tenant(directory)
    assert await ledger.alerts(tenant) is None
    saved = await ledger.set_alerts(
        tenant,
        thresholds_micros=[10_000_000, 2_500_000, 10_000_000],
        low_balance_pct=20,
        email_enabled=False,
    )
    assert saved.thresholds_micros == (2_500_000, 10_000_000)
    assert await ledger.alerts(tenant) == saved
    before = await row_counts(engine)
    for bad in (
        {"thresholds_micros": [0]},
        {"low_balance_pct": 0},
        {"thresholds_micros": [1] * 21},
    ):
        arguments = {"thresholds_micros": [1], "low_balance_pct": None, "email_enabled": True}
        with pytest.raises(ValidationError):
            await ledger.set_alerts(tenant, **(arguments | bad))
    with pytest.raises(NotFoundError):
        await ledger.set_alerts(
            "no-such-tenant", thresholds_micros=[], low_balance_pct=None, email_enabled=True
        )
    assert await row_counts(engine) == before
    assert await ledger.alerts(tenant) == saved


async def test_carrier_account_keeps_what_the_carrier_reported(directory: Directory) -> None:
    tenant = await _tenant(directory)
    assert await directory.carrier_account(tenant) is None
    credentials = PlivoCredentials("MAPLIVOAUTHID0000001", Secret("plivo-token-123"))
    await directory.connect_carrier(
        tenant, credentials, account_name="  Acme Plivo  ", account_country="US"
    )
    account = await directory.carrier_account(tenant)
    assert account is not None
    assert (account.carrier, account.account_id) == ("plivo", "MAPLIVOAUTHID0000001")
    assert (account.account_name, account.account_country) == ("Acme Plivo", "US")
    await directory.disconnect_carrier(tenant)
    assert await directory.carrier_account(tenant) is None
    with pytest.raises(NotFoundError):
        await directory.carrier_account("no-such-tenant")


async def test_touch_api_key_only_moves_forward(directory: Directory) -> None:
    tenant = await _tenant(directory)
    created = await directory.create_api_key(tenant, KeyKind.SECRET)
    assert created.key.last_used_at_ms is None
    await directory.touch_api_key(created.key.id, T0)
    await directory.touch_api_key(created.key.id, T0 - 5)
    (key,) = await directory.list_api_keys(tenant)
    assert key.last_used_at_ms == T0


async def test_delete_agent_detaches_numbers_and_drops_its_publishable_keys(
    directory: Directory,
) -> None:
    tenant, other = await _tenant(directory), await _tenant(directory)
    agent = await directory.create_agent(tenant, name="gone")
    number = random_number()
    await directory.add_number(tenant, number, agent.id)
    await directory.create_api_key(tenant, KeyKind.PUBLISHABLE, agent_id=agent.id)
    with pytest.raises(NotFoundError):
        await directory.delete_agent(other, agent.id)
    await directory.delete_agent(tenant, agent.id)
    route = await directory.resolve_number(number)
    assert route.agent is None
    assert route.tenant.id == tenant
    assert [k.kind for k in await directory.list_api_keys(tenant)] == []
    with pytest.raises(NotFoundError):
        await directory.delete_agent(tenant, agent.id)
