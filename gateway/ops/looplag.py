"""Event-loop lag: how late the loop wakes a timer.

Every call's pacing and relaying runs on one event loop per process; a blocking call
anywhere (a sync DNS lookup, a slow ``json.dumps`` of a huge document, CPU saturation)
delays every call at once, and the caller hears it as a gap. The monitor sleeps a fixed
interval and records how much later than asked it woke up: on an idle, healthy loop
that is well under a millisecond; above 20 ms (one frame) it is audible.

Use :func:`loop_lag_ctx` as an aiohttp ``cleanup_ctx`` entry, or start/stop a
:class:`LoopLagMonitor` yourself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

__all__ = ["LoopLagMonitor", "loop_lag_ctx"]

log = logging.getLogger("gateway.server")

_WARN_LAG_S = 0.1  # a loop stalled this long is logged (rate: at most one line per 10 s)
_WARN_EVERY_S = 10.0


class LoopLagMonitor:
    """Measures event-loop lag every ``interval_s`` and hands each figure to ``observe``.

    Args:
        observe: receives each lag in seconds (e.g. ``GatewayMetrics.observe_loop_lag``).
        interval_s: sleep between samples, seconds (0.25 s costs nothing measurable).
    """

    def __init__(self, observe: Callable[[float], None], *, interval_s: float = 0.25) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self._observe = observe
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.max_lag_s = 0.0
        """Largest lag seen so far, seconds."""
        self.samples = 0
        """Samples taken so far."""

    def start(self) -> None:
        """Start sampling on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        """Stop sampling and wait for the task to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_warning = -_WARN_EVERY_S
        while True:
            due = loop.time() + self._interval_s
            await asyncio.sleep(self._interval_s)
            lag = max(0.0, loop.time() - due)
            self.samples += 1
            self.max_lag_s = max(self.max_lag_s, lag)
            self._observe(lag)
            if lag >= _WARN_LAG_S and loop.time() - last_warning >= _WARN_EVERY_S:
                last_warning = loop.time()
                log.warning("event loop lag %.0f ms: something blocked the loop", lag * 1000)


def loop_lag_ctx(
    observe: Callable[[float], None], *, interval_s: float = 0.25
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry running a :class:`LoopLagMonitor` for the app's life."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        monitor = LoopLagMonitor(observe, interval_s=interval_s)
        monitor.start()
        try:
            yield
        finally:
            await monitor.stop()

    return ctx
