"""The webhook dispatcher: claims due deliveries from the outbox and POSTs them.

One :class:`Dispatcher` per gateway instance, any number of instances: each row is
leased to one claimant at a time (:func:`gateway.webhooks.outbox.claim`). Per delivery
(reliability.md 3.2 item 5): up to ``max_attempts`` (5) attempts, each cut at
``attempt_timeout_s`` (3 s: connect, TLS and response together); after failed attempt
``n`` the next is due ``retry_base_s * 2**(n-1)`` later (1, 2, 4, 8 s) times a uniform
jitter factor in ``1 ± jitter`` (±20 %, AWS Builders' Library: jitter spreads retries of
many deliveries that failed together). Only a 2xx ends a delivery as ``delivered``;
redirects are not followed (3xx is a failure). After the last failed attempt it is
``dead``: listed by the API, replayable, and alerted (:mod:`gateway.webhooks.alerts`).

Each attempt is signed afresh (new timestamp) with the endpoint's current secret, and its
previous one during a rotation window (:mod:`gateway.webhooks.events`). A lease lasts
``lease_s`` (longer than an attempt): a dispatcher killed mid-attempt leaves the row to be
claimed again when the lease runs out, and only then can a receiver see a duplicate
(same event id). Pending rows survive restarts because they live in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.errors import GatewayError, SecretError
from gateway.store.secrets import Keyring
from gateway.store.sql import schema
from gateway.store.sql.engine import db_errors, read_tx, wall_clock_ms, write_tx
from gateway.webhooks.alerts import (
    AlertSender,
    NullMetrics,
    SmtpTarget,
    WebhookMetrics,
    parse_smtp_url,
)
from gateway.webhooks.endpoints import WebhookStore
from gateway.webhooks.events import delivery_headers
from gateway.webhooks.outbox import Claimed, Outcome, claim, settle
from gateway.webhooks.urls import PublicOnlyResolver, check_literal

__all__ = ["DispatchSettings", "Dispatcher", "run_dispatcher"]

log = logging.getLogger("gateway.webhooks")

_DEPTH_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """How deliveries are made (see :class:`gateway.config.Settings` for the variables)."""

    dev_mode: bool = False
    """Allow loopback/private targets (development only)."""
    attempt_timeout_s: float = 3.0
    """Each attempt is cut after this many seconds."""
    max_attempts: int = 5
    """Attempts per delivery before it is dead-lettered."""
    retry_base_s: float = 1.0
    """Gap after the first failed attempt; doubles after each further one."""
    jitter: float = 0.2
    """Each gap is multiplied by a uniform factor in ``1 ± jitter``."""
    lease_s: float = 30.0
    """How long a claim is held (must exceed the attempt timeout)."""
    poll_interval_s: float = 1.0
    """Longest sleep between looks at the outbox."""
    batch: int = 50
    """Rows claimed per look."""
    concurrency: int = 32
    """Attempts in flight at once in this process."""
    alert_interval_s: float = 3600.0
    """At most one dead-letter alert per endpoint per this many seconds."""
    smtp: SmtpTarget | None = None
    """Mail server for alerts; None = log line and metric only."""

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchSettings:
        """The dispatcher's part of the gateway's settings."""
        return cls(
            dev_mode=settings.webhook_dev_mode,
            attempt_timeout_s=settings.webhook_attempt_timeout_s,
            max_attempts=settings.webhook_max_attempts,
            retry_base_s=settings.webhook_retry_base_s,
            jitter=settings.webhook_retry_jitter,
            lease_s=settings.webhook_lease_s,
            poll_interval_s=settings.webhook_poll_interval_s,
            alert_interval_s=settings.webhook_alert_interval_s,
            smtp=None if settings.smtp_url is None else parse_smtp_url(settings.smtp_url),
        )

    def gap_s(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based), jittered."""
        factor = rng.uniform(1 - self.jitter, 1 + self.jitter)
        return float(self.retry_base_s * 2.0 ** (attempt - 1) * factor)


class Dispatcher:
    """Delivers the outbox of one database.

    Args:
        engine: the ledger database's engine (migrated).
        keyring: opens the endpoint secrets.
        settings: schedule, timeouts, lease.
        metrics: the metric hook.
        clock_ms: wall-clock milliseconds (signature timestamps, schedule).
        rng: jitter source.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        keyring: Keyring,
        settings: DispatchSettings,
        *,
        metrics: WebhookMetrics | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics: WebhookMetrics = metrics or NullMetrics()
        self.clock_ms = clock_ms
        self.rng = rng or random.Random()  # jitter, not cryptography
        self.store = WebhookStore(engine, keyring, clock_ms)
        self.alerts = AlertSender(
            engine, round(settings.alert_interval_s * 1000), self.metrics, settings.smtp
        )
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._depth_at = 0.0

    async def __aenter__(self) -> Dispatcher:
        resolver = None if self.settings.dev_mode else PublicOnlyResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, limit=self.settings.concurrency)
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set (in-flight attempts are then cancelled)."""
        while not stop.is_set():
            try:
                delay = await self._step()
            except GatewayError as exc:
                log.warning("webhook dispatcher: %s; retrying", exc)
                delay = self.settings.poll_interval_s
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def _step(self) -> float:
        """Claim what is due, if anything; returns how long to sleep (woken earlier by
        :meth:`_done`). Peeking first is a read: an idle dispatcher never takes SQLite's
        write lock."""
        await self._report_depth()
        if len(self._inflight) >= self.settings.concurrency:
            return self.settings.poll_interval_s
        delay = await self._idle_delay()
        if delay > 0:
            return delay
        return 0.0 if await self.run_once() else self.settings.poll_interval_s

    async def run_once(self) -> int:
        """Claim what is due (up to the free concurrency) and start attempting it."""
        room = self.settings.concurrency - len(self._inflight)
        if room <= 0:
            return 0
        now = self.clock_ms()
        lease_ms = round(self.settings.lease_s * 1000)
        with db_errors("claim webhook deliveries"):
            async with write_tx(self.engine) as conn:
                claimed = await claim(conn, now, lease_ms, min(room, self.settings.batch))
        for item in claimed:
            task = asyncio.create_task(self._deliver(item), name=f"webhook-{item.delivery_id}")
            self._inflight.add(task)
            task.add_done_callback(self._done)
        return len(claimed)

    async def drain(self) -> None:
        """Wait for the attempts in flight (tests, orderly shutdown)."""
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook attempt crashed", exc_info=task.exception())

    async def _idle_delay(self) -> float:
        """Seconds until the earliest claimable row is due (0: now), at most the poll."""
        d = schema.webhook_deliveries.c
        now = self.clock_ms()
        free = sa.or_(d.claimed_until_ms.is_(None), d.claimed_until_ms < now)
        query = sa.select(sa.func.min(d.next_attempt_at_ms)).where(d.status == "pending", free)
        with db_errors("peek webhook outbox"):
            async with read_tx(self.engine) as conn:
                due = (await conn.execute(query)).scalar_one()
        poll = self.settings.poll_interval_s
        if due is None:
            return poll
        return min(poll, max(0.0, (int(due) - now) / 1000))

    async def _report_depth(self) -> None:
        now = time.monotonic()
        if now - self._depth_at < _DEPTH_EVERY_S:
            return
        self._depth_at = now
        self.metrics.outbox_depth(await self.store.pending_count())

    async def _deliver(self, item: Claimed) -> None:
        outcome = await self._attempt(item)
        now = self.clock_ms()
        next_at = None
        if outcome.outcome != "success" and item.attempt < self.settings.max_attempts:
            next_at = now + round(self.settings.gap_s(item.attempt, self.rng) * 1000)
        try:
            with db_errors("settle webhook delivery"):
                async with write_tx(self.engine) as conn:
                    status = await settle(
                        conn, item, outcome, next_attempt_at_ms=next_at, now_ms=now
                    )
        except GatewayError as exc:
            # The lease runs out and the row is attempted again (a possible duplicate).
            log.warning("webhook delivery %s: could not record attempt (%s)", item.delivery_id, exc)
            return
        self.metrics.attempt(outcome.outcome)
        latency = max(0, now - item.created_at_ms) / 1000
        if status == "delivered":
            self.metrics.delivery("delivered", latency)
        elif status == "dead":
            self.metrics.delivery("dead", latency)
            await self.alerts.dead_lettered(
                endpoint_id=item.endpoint_id,
                url=item.url,
                alert_email=item.alert_email,
                delivery_id=item.delivery_id,
                event_type=item.event_type,
                now_ms=now,
            )

    async def _attempt(self, item: Claimed) -> Outcome:
        assert self._session is not None, "use the dispatcher as an async context manager"
        started = self.clock_ms()
        t0 = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            secret = self.store.open_secret(item.tenant_id, item.endpoint_id, item.secret)
            previous = None
            if item.previous is not None:
                previous = self.store.open_secret(item.tenant_id, item.endpoint_id, item.previous)
            headers = delivery_headers(
                body=item.body,
                event_type=item.event_type,
                event_id=item.event_id,
                timestamp_ms=self.clock_ms(),
                secret=secret.reveal(),
                previous_secret=None if previous is None else previous.reveal(),
            )
            if not self.settings.dev_mode:
                check_literal(item.url)
            timeout = self.settings.attempt_timeout_s
            async with asyncio.timeout(timeout):
                async with self._session.post(
                    item.url,
                    data=item.body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    status = response.status
            result = "success" if 200 <= status < 300 else "http_error"
        except TimeoutError:
            result, error = "timeout", f"no answer within {self.settings.attempt_timeout_s:g} s"
        except SecretError:
            result, error = "secret_error", "the endpoint secret does not open"
        except (aiohttp.ClientError, OSError) as exc:
            # The class only: messages can quote the URL (a receiver's token in its query).
            result, error = "network_error", type(exc).__name__
        duration = round((time.monotonic() - t0) * 1000)
        log.debug("webhook %s attempt %d: %s %s", item.delivery_id, item.attempt, result, status)
        return Outcome(started, duration, status, result, error)


async def run_dispatcher(
    settings: Settings,
    engine: AsyncEngine,
    keyring: Keyring,
    stop: asyncio.Event,
    metrics: WebhookMetrics | None = None,
) -> None:
    """Run this instance's dispatcher until ``stop`` is set (the server's loop task)."""
    async with Dispatcher(
        engine, keyring, DispatchSettings.from_settings(settings), metrics=metrics
    ) as dispatcher:
        await dispatcher.run(stop)
