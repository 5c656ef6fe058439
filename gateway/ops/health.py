"""``/healthz``, ``/readyz`` and ``/metrics``: aiohttp handler factories.

Semantics (reliability.md §5.6; docs/operations.md):

* ``/healthz`` is *liveness*: 200 while the process serves HTTP at all. It never looks
  at Redis or the database: an orchestrator restarts a pod whose liveness fails, and
  restarting a gateway because Redis is down would hang up every live call on it.
* ``/readyz`` is *readiness*: 200 only when this instance should get new calls. 503
  while draining (checked on every request, so it flips at once on SIGTERM) or while
  the coordination backend or the database does not answer a ping. The pings are
  bounded by a timeout and their result is cached for ``cache_s`` (1 s), with one ping
  in flight at a time, so a storm of probes from several load balancers costs one
  round trip per second.
* ``/metrics`` renders the exposition registry in a worker thread: in multiprocess mode
  that reads every worker's files, and the event loop keeps pacing audio meanwhile.

The bodies are small JSON documents naming each check as ``ok``/``fail``/``timeout``;
exception messages are never included (a driver's message can hold a URL with a
password), only logged by type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = [
    "HEALTHZ_PATH",
    "METRICS_PATH",
    "READYZ_PATH",
    "Handler",
    "Ping",
    "Readiness",
    "ReadinessReport",
    "healthz_handler",
    "metrics_handler",
    "readyz_handler",
]

log = logging.getLogger("gateway.server")

HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
METRICS_PATH = "/metrics"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Ping = Callable[[], Awaitable[object]]
"""An async check that returns (anything) when the backend answers, raises otherwise."""


def healthz_handler(details: Callable[[], Mapping[str, int]] | None = None) -> Handler:
    """A liveness handler: always 200 ``{"status": "ok", ...details()}``.

    Args:
        details: cheap, synchronous extra figures (e.g. ``{"live_calls": 3}``).
    """

    async def healthz(request: web.Request) -> web.Response:
        body: dict[str, object] = {"status": "ok"}
        if details is not None:
            body.update(details())
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    return healthz


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """One readiness verdict: ``ready`` and each check's result (``ok``/``fail``/...)."""

    ready: bool
    checks: Mapping[str, str]


class Readiness:
    """Decides readiness from a draining flag and backend pings, with a short cache.

    Args:
        is_draining: True once the instance drains (read on every call, never cached).
        pings: named async checks, e.g. ``{"coordination": coord.ping,
            "database": state.ping}``.
        cache_s: how long a ping verdict is reused, seconds.
        timeout_s: how long one ping may take before it counts as failed, seconds.
        clock: monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        is_draining: Callable[[], bool],
        pings: Mapping[str, Ping],
        *,
        cache_s: float = 1.0,
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._is_draining = is_draining
        self._pings = dict(pings)
        self._cache_s = cache_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._cached: tuple[float, dict[str, str]] | None = None
        self._inflight: asyncio.Future[dict[str, str]] | None = None
        self.pings_run = 0
        """How many times the pings actually ran (cache misses), for tests and logs."""

    async def check(self) -> ReadinessReport:
        """The current verdict: draining first, then the (cached) pings."""
        if self._is_draining():
            return ReadinessReport(False, {"draining": "yes"})
        results = await self._ping_results()
        checks = {"draining": "no", **results}
        return ReadinessReport(all(v == "ok" for v in results.values()), checks)

    async def _ping_results(self) -> dict[str, str]:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._cache_s:
            return self._cached[1]
        if self._inflight is None:
            # Single flight: concurrent probes wait for the one ping in progress.
            self._inflight = asyncio.ensure_future(self._run_pings())
            self._inflight.add_done_callback(self._clear_inflight)
        return await asyncio.shield(self._inflight)

    def _clear_inflight(self, future: asyncio.Future[dict[str, str]]) -> None:
        self._inflight = None
        if not future.cancelled() and future.exception() is None:
            self._cached = (self._clock(), future.result())

    async def _run_pings(self) -> dict[str, str]:
        self.pings_run += 1
        names = list(self._pings)
        outcomes = await asyncio.gather(*(self._one(name) for name in names))
        return dict(zip(names, outcomes, strict=True))

    async def _one(self, name: str) -> str:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._pings[name]()
        except TimeoutError:
            log.warning("readiness: %s ping timed out after %.1f s", name, self._timeout_s)
            return "timeout"
        except Exception as exc:  # any backend failure means "not ready", never a 500
            log.warning("readiness: %s ping failed (%s)", name, type(exc).__name__)
            return "fail"
        return "ok"


def readyz_handler(readiness: Readiness) -> Handler:
    """A readiness handler: 200 when ready, else 503, with each check's result."""

    async def readyz(request: web.Request) -> web.Response:
        report = await readiness.check()
        body = {"status": "ready" if report.ready else "not_ready", "checks": report.checks}
        return web.json_response(
            body, status=200 if report.ready else 503, headers={"Cache-Control": "no-store"}
        )

    return readyz


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """A ``/metrics`` handler rendering ``registry`` (text format, or OpenMetrics on
    request through the ``Accept`` header), off the event loop."""

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.to_thread(encoder, registry)
        # content_type carries its charset; aiohttp wants it in the raw header.
        return web.Response(body=body, headers={"Content-Type": content_type})

    return metrics
