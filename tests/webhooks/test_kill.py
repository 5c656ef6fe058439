"""Kill the dispatcher process mid-delivery (SIGKILL), restart it: nothing is lost.

The worker (:mod:`tests.webhooks.dispatcher_worker`) delivers 20 events to a receiver
that takes 0.3 s to answer, 4 at a time. It is killed while requests are in flight;
the deliveries it held stay leased in the database until the lease (2 s) runs out, and a
fresh worker then delivers everything. Every event arrives at least once; an event
arrives twice only if it was in flight at the kill, and then with the same id and body.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import sqlalchemy as sa

from gateway.store.sql import schema
from tests.webhooks.conftest import (
    SECRET,
    Fresh,
    finished_call,
    receiver,
    sdk_verify,
    tenant_with_endpoint,
)

EVENTS = 20


async def start_worker(url: str) -> asyncio.subprocess.Process:
    """Start a dispatcher process on ``url`` and wait for it to run."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.webhooks.dispatcher_worker", url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), timeout=15) == b"ready\n"
    return process


async def statuses(fresh: Fresh) -> Counter[str]:
    """Deliveries by status."""
    d = schema.webhook_deliveries.c
    async with fresh.engine.connect() as conn:
        rows = (await conn.execute(sa.select(d.status, sa.func.count()).group_by(d.status))).all()
    return Counter({str(status): int(count) for status, count in rows})


async def all_delivered(fresh: Fresh) -> None:
    """Wait until every delivery is delivered (callers bound it with a timeout)."""
    while True:
        if (await statuses(fresh))["delivered"] >= EVENTS:
            return
        await asyncio.sleep(0.05)


async def test_sigkill_mid_delivery_loses_nothing(fresh: Fresh) -> None:
    async with receiver(k=["slow"] * 100) as rx:
        tenant, _ = await tenant_with_endpoint(fresh.directory, fresh.keyring, rx.url("k"))
        for _ in range(EVENTS):
            await finished_call(fresh.ledger, tenant)
        ev = schema.webhook_events.c
        async with fresh.engine.connect() as conn:
            event_ids = {str(i) for i in (await conn.execute(sa.select(ev.id))).scalars()}
        first = await start_worker(fresh.url)
        try:
            async with asyncio.timeout(15):
                await rx.wait_for("k", 6)
        finally:
            first.kill()  # SIGKILL: no cleanup, leases left held
            await first.wait()
        at_kill = list(rx.got("k"))
        after_kill = await statuses(fresh)
        second = await start_worker(fresh.url)
        try:
            async with asyncio.timeout(30):
                await all_delivered(fresh)
        finally:
            second.kill()
            await second.wait()
        got = rx.got("k")
    assert after_kill["pending"] > 0  # the kill really interrupted the work
    received = Counter(r.event["id"] for r in got)
    assert set(received) == event_ids  # every event at least once
    in_flight_at_kill = {r.event["id"] for r in at_kill}
    duplicated = {event_id for event_id, n in received.items() if n > 1}
    assert duplicated <= in_flight_at_kill  # duplicates only from the crash
    assert max(received.values()) <= 2
    print(f"in flight at the kill: {len(in_flight_at_kill)}, delivered twice: {len(duplicated)}")  # noqa: T201
    assert all(sdk_verify(r, SECRET) for r in got)
    bodies: dict[str, bytes] = {}
    for r in got:
        assert bodies.setdefault(r.event["id"], r.body) == r.body  # same bytes every time
    assert await statuses(fresh) == Counter({"delivered": EVENTS})
