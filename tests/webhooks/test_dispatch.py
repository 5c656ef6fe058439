"""The dispatcher against a real local receiver: attempts, gaps, signatures, dead letters.

Schedules are scaled down (gaps 0.2, 0.4, 0.8, 1.6 s; 0.5 s timeout) except in
:func:`test_real_schedule_and_real_timeout`, which runs the production numbers (3 s
timeout, gaps 1, 2, 4, 8 s). Gaps are measured at the receiver, between one attempt's
arrival and the next, and compared with the gap the dispatcher drew: the test records
each jitter factor, so a retry is held to its exact due time. It may never arrive early;
it may arrive late by what a loaded machine takes to answer, claim and poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import itertools
import random
import secrets
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.secrets import Keyring
from gateway.store.sql.engine import create_engine
from gateway.store.sql.migrate import upgrade
from gateway.webhooks.alerts import CountingMetrics, SmtpTarget
from gateway.webhooks.dispatcher import Dispatcher, DispatchSettings
from gateway.webhooks.endpoints import Delivery, WebhookStore
from tests.store.conftest import KEY_A, _create_database, _drop_database
from tests.webhooks.conftest import (
    SECRET,
    Fresh,
    Request,
    fast,
    finished_call,
    make_fresh,
    receiver,
    sdk_verify,
    tenant_with_endpoint,
)
from tests.webhooks.smtp import smtp_stand_in

LATE_S = 0.4
"""What a gap may exceed its drawn length by: the response, a claim, a poll tick, and a
busy CI machine's scheduling delay (0.2 s late was seen on PostgreSQL under a parallel
suite). Being late is tolerated; being early is not (see :func:`check_gaps`)."""
EARLY_S = 0.005
"""Rounding: the due time is kept in whole milliseconds, the arrival in float seconds."""


class RecordingRandom(random.Random):
    """The dispatcher's jitter source, keeping every factor it hands out."""

    def __init__(self) -> None:
        super().__init__()
        self.factors: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        factor = super().uniform(a, b)
        self.factors.append(factor)
        return factor


CUT_SLACK_S = 1.0
"""What a timed-out attempt's recorded duration may exceed the 3 s timeout by. Loose on
purpose: the test proves the hanging receiver is cut (it would hang for minutes), not how
promptly a loaded CI machine runs the timer; the 2.9 s floor proves it is not cut early."""


@contextlib.asynccontextmanager
async def dispatching(
    fresh: Fresh, settings: DispatchSettings, metrics: CountingMetrics | None = None
) -> AsyncIterator[Dispatcher]:
    """Run a dispatcher on ``fresh`` for the duration of the block."""
    stop = asyncio.Event()
    rng = RecordingRandom()
    async with Dispatcher(
        fresh.engine, fresh.keyring, settings, metrics=metrics, rng=rng
    ) as dispatcher:
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            yield dispatcher
        finally:
            stop.set()
            await task


async def settled(fresh: Fresh, tenant_id: str, endpoint_id: str, count: int = 1) -> list[Delivery]:
    """Wait until ``count`` deliveries of the endpoint are no longer pending."""
    while True:
        deliveries, _ = await fresh.store.deliveries(tenant_id, endpoint_id)
        done = [d for d in deliveries if d.status != "pending"]
        if len(done) >= count:
            return deliveries
        await asyncio.sleep(0.02)


def check_gaps(
    requests: list[Request],
    dispatcher: Dispatcher,
    base_s: float,
    extra_s: float = 0.0,
    late_s: float = LATE_S,
) -> list[float]:
    """Gap ``n`` is ``base * 2**(n-1)`` times the ``n``-th drawn factor (+ ``extra_s``), never
    shorter and at most ``late_s`` longer; every factor lies within the ±20 % jitter."""
    assert isinstance(dispatcher.rng, RecordingRandom)
    factors = dispatcher.rng.factors
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert len(factors) >= len(gaps)
    assert all(0.8 <= f <= 1.2 for f in factors)
    for n, (gap, factor) in enumerate(zip(gaps, factors, strict=False), start=1):
        drawn = base_s * 2 ** (n - 1) * factor + extra_s
        low, high = drawn - EARLY_S, drawn + late_s
        assert low <= gap <= high, f"gap {n}: {gap:.3f} s, drawn {drawn:.3f} s"
    return gaps


def check_signed(requests: list[Request], event_type: str) -> str:
    """Every request verifies under the SDK, carries one event id, and is signed afresh."""
    assert all(sdk_verify(r, SECRET) for r in requests)
    ids = {r.event["id"] for r in requests} | {r.headers["X-Rymi-Webhook-Id"] for r in requests}
    assert len(ids) == 1
    assert {r.headers["X-Rymi-Event"] for r in requests} == {event_type}
    stamps = [int(r.headers["X-Rymi-Timestamp"]) for r in requests]
    assert stamps == sorted(set(stamps))  # a fresh timestamp on every attempt
    assert len({r.headers["X-Rymi-Signature"] for r in requests}) == len(requests)
    assert all("X-Rymi-Signature-Previous" not in r.headers for r in requests)
    return ids.pop()


async def test_500_five_times_is_dead_lettered_with_one_alert(fresh: Fresh) -> None:
    metrics = CountingMetrics()
    async with receiver(a=["500"] * 10) as rx:
        tenant, endpoint = await tenant_with_endpoint(fresh.directory, fresh.keyring, rx.url("a"))
        await finished_call(fresh.ledger, tenant)
        async with dispatching(fresh, fast(), metrics) as dispatcher:
            async with asyncio.timeout(10):
                [delivery] = await settled(fresh, tenant, endpoint)
            await asyncio.sleep(0.5)  # nothing more arrives after the dead letter
        got = rx.got("a")
    assert delivery.status == "dead"
    assert len(got) == 5
    assert [a.attempt for a in delivery.attempts] == [1, 2, 3, 4, 5]
    assert {(a.status_code, a.outcome) for a in delivery.attempts} == {(500, "http_error")}
    check_gaps(got, dispatcher, 0.2)
    assert check_signed(got, "call.completed") == delivery.event_id
    assert metrics.attempts == {"http_error": 5}
    assert metrics.deliveries == {"dead": 1}
    assert metrics.alerts == 1
    assert metrics.depth == 1  # reported on the first look, when the event was pending
    [latency] = metrics.latencies_s
    assert latency >= 0.8 * (0.2 + 0.4 + 0.8 + 1.6)  # written -> dead: the whole schedule


async def test_success_on_the_third_attempt_ends_it(fresh: Fresh) -> None:
    metrics = CountingMetrics()
    async with receiver(a=["500", "307"]) as rx:  # a redirect is a failure, not followed
        tenant, endpoint = await tenant_with_endpoint(fresh.directory, fresh.keyring, rx.url("a"))
        call_id = await finished_call(fresh.ledger, tenant, lines=["hello", "bye"])
        async with dispatching(fresh, fast(), metrics) as dispatcher:
            async with asyncio.timeout(10):
                [delivery] = await settled(fresh, tenant, endpoint)
            await asyncio.sleep(0.4)
        got = rx.got("a")
    assert delivery.status == "delivered"
    assert len(got) == 3
    assert [a.status_code for a in delivery.attempts] == [500, 307, 200]
    check_gaps(got, dispatcher, 0.2)
    check_signed(got, "call.completed")
    data = got[-1].event["data"]
    assert data["call_id"] == call_id
    assert [line["text"] for line in data["transcript"]] == ["hello", "bye"]
    assert metrics.attempts == {"http_error": 2, "success": 1}
    assert metrics.deliveries == {"delivered": 1}
    assert metrics.alerts == 0


async def test_replay_of_a_dead_letter_delivers_the_same_event(fresh: Fresh) -> None:
    async with receiver(a=["500"]) as rx:
        tenant, endpoint = await tenant_with_endpoint(fresh.directory, fresh.keyring, rx.url("a"))
        await finished_call(fresh.ledger, tenant)
        async with dispatching(fresh, fast(max_attempts=1)):
            async with asyncio.timeout(5):
                [dead] = await settled(fresh, tenant, endpoint)
            assert dead.status == "dead"
            new_id, event_id = await fresh.store.replay(tenant, endpoint, dead.id)
            async with asyncio.timeout(5):
                deliveries = await settled(fresh, tenant, endpoint, count=2)
        got = rx.got("a")
    replayed = next(d for d in deliveries if d.id == new_id)
    assert (replayed.status, replayed.replay_of, replayed.event_id) == (
        "delivered",
        dead.id,
        event_id,
    )
    assert len(got) == 2
    assert got[0].body == got[1].body  # the same event, byte for byte
    assert all(sdk_verify(r, SECRET) for r in got)


async def test_rotation_signs_with_both_secrets_until_the_window_ends(fresh: Fresh) -> None:
    new_secret = "whsec_" + "n" * 30
    async with receiver() as rx:
        tenant, endpoint = await tenant_with_endpoint(fresh.directory, fresh.keyring, rx.url("a"))
        await fresh.store.update(tenant, endpoint, rotation_window_ms=60_000, secret=new_secret)
        await finished_call(fresh.ledger, tenant)
        await tenant_with_endpoint(fresh.directory, fresh.keyring, rx.url("b"))
        async with dispatching(fresh, fast()):
            async with asyncio.timeout(5):
                [during] = await rx.wait_for("a", 1)
        # A window of 0: the old secret stops signing at once.
        await fresh.store.update(tenant, endpoint, rotation_window_ms=0, secret=SECRET)
        await finished_call(fresh.ledger, tenant)
        async with dispatching(fresh, fast()):
            async with asyncio.timeout(5):
                after = (await rx.wait_for("a", 2))[1]
    assert sdk_verify(during, new_secret)
    assert sdk_verify(during, SECRET, header="X-Rymi-Signature-Previous")
    with pytest.raises(ValueError, match="Invalid Webhook Signature"):
        sdk_verify(during, SECRET)
    assert sdk_verify(after, SECRET)
    assert "X-Rymi-Signature-Previous" not in after.headers
    assert rx.got("b") == []  # the other tenant's endpoint heard nothing


async def test_alerts_are_throttled_per_endpoint_and_mailed(fresh: Fresh) -> None:
    metrics = CountingMetrics()
    async with smtp_stand_in() as smtp, receiver(a=["500"] * 9, b=["500"] * 9) as rx:
        tenant, a = await tenant_with_endpoint(fresh.directory, fresh.keyring, rx.url("a"))
        b = (
            await fresh.store.create(
                tenant, rx.url("b"), ["call.completed"], SECRET, "ops@example.com"
            )
        ).id
        await fresh.store.update(tenant, a, rotation_window_ms=0, alert_email="ops@example.com")
        for _ in range(3):
            await finished_call(fresh.ledger, tenant)
        target = SmtpTarget("127.0.0.1", smtp.port, "none", sender="gw@example.com")
        async with dispatching(fresh, fast(max_attempts=1, smtp=target), metrics):
            async with asyncio.timeout(5):
                await settled(fresh, tenant, a, count=3)
                await settled(fresh, tenant, b, count=3)
                await smtp.wait_for(2)
            await asyncio.sleep(0.2)
    assert metrics.deliveries == {"dead": 6}
    assert metrics.alerts == 2  # one per endpoint, not one per dead letter
    assert len(smtp.messages) == 2
    mails = [
        email.message_from_bytes(m, _class=EmailMessage, policy=default) for m in smtp.messages
    ]
    texts = [str(m.get_content()) for m in mails]
    assert [m["To"] for m in mails] == ["ops@example.com"] * 2
    assert all("dead-lettered" in t and SECRET not in t for t in texts)
    assert sorted(t.split("webhook ", 1)[1].split(" ", 1)[0] for t in texts) == sorted([a, b])


async def test_production_mode_refuses_private_targets_at_send_time(fresh: Fresh) -> None:
    # Registered behind the API's back (as if DNS had changed since registration).
    metrics = CountingMetrics()
    async with receiver() as rx:
        tenant, endpoint = await tenant_with_endpoint(fresh.directory, fresh.keyring, rx.url("a"))
        await finished_call(fresh.ledger, tenant)
        async with dispatching(fresh, fast(dev_mode=False, max_attempts=2), metrics):
            async with asyncio.timeout(5):
                [delivery] = await settled(fresh, tenant, endpoint)
        got = rx.got("a")
    assert got == []
    assert delivery.status == "dead"
    assert {a.outcome for a in delivery.attempts} == {"network_error"}
    assert metrics.attempts == {"network_error": 2}


@pytest.mark.slow
async def test_real_schedule_and_real_timeout(fresh: Fresh, tmp_path: Path) -> None:
    """Production numbers: gaps 1, 2, 4, 8 s; a receiver that hangs is cut at 3 s."""
    other = await make_fresh(tmp_path / "hang")
    try:
        async with receiver(a=["500"] * 4, h=["hang"] * 9) as rx:
            tenant, endpoint = await tenant_with_endpoint(
                fresh.directory, fresh.keyring, rx.url("a")
            )
            await finished_call(fresh.ledger, tenant)
            h_tenant, h_endpoint = await tenant_with_endpoint(
                other.directory, other.keyring, rx.url("h")
            )
            await finished_call(other.ledger, h_tenant)
            real = DispatchSettings(dev_mode=True, poll_interval_s=0.02)
            hanging = DispatchSettings(dev_mode=True, retry_base_s=0.1, poll_interval_s=0.02)
            async with dispatching(fresh, real) as ok_d, dispatching(other, hanging) as hang_d:
                async with asyncio.timeout(45):
                    [ok] = await settled(fresh, tenant, endpoint)
                    [dead] = await settled(other, h_tenant, h_endpoint)
            got, hung = rx.got("a"), rx.got("h")
    finally:
        await other.engine.dispose()
    assert ok.status == "delivered"
    assert len(got) == 5
    gaps = check_gaps(got, ok_d, 1.0)
    check_signed(got, "call.completed")
    assert dead.status == "dead"
    assert len(hung) == 5
    assert {a.outcome for a in dead.attempts} == {"timeout"}
    assert all(2.9 <= a.duration_ms / 1000 <= 3.0 + CUT_SLACK_S for a in dead.attempts)
    # the attempt before each gap ran to its timeout: ~3 s, late as far as the cut may be
    check_gaps(hung, hang_d, 0.1, extra_s=2.9, late_s=LATE_S + CUT_SLACK_S + 0.1)
    check_signed(hung, "call.completed")
    print(f"real gaps: {', '.join(f'{g:.3f}' for g in gaps)} s")  # noqa: T201


@pytest.mark.postgres
async def test_dispatch_on_postgres(postgres_url: str) -> None:
    """The same loop on PostgreSQL (its own database: a dispatcher claims every due row)."""
    admin = make_url(postgres_url)
    name = f"{admin.database}_wh_{secrets.token_hex(3)}"
    await _create_database(postgres_url, name)
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade(url)
        engine = create_engine(url)
        keyring = Keyring((KEY_A,))
        fresh = Fresh(
            url,
            engine,
            keyring,
            Directory(engine, keyring),
            Ledger(engine),
            WebhookStore(engine, keyring),
        )
        try:
            async with receiver(a=["500", "500"]) as rx:
                tenant, endpoint = await tenant_with_endpoint(fresh.directory, keyring, rx.url("a"))
                await finished_call(fresh.ledger, tenant)
                async with dispatching(fresh, fast()) as dispatcher:
                    async with asyncio.timeout(10):
                        [delivery] = await settled(fresh, tenant, endpoint)
                got = rx.got("a")
        finally:
            await engine.dispose()
    finally:
        await _drop_database(postgres_url, name)
    assert delivery.status == "delivered"
    assert len(got) == 3
    check_gaps(got, dispatcher, 0.2)
    check_signed(got, "call.completed")
