"""Garbage-collector pauses: keep them short, and measure them.

CPython's cyclic collector stops the whole process while it scans a generation. The
oldest generation holds everything the gateway imported and built at start-up (aiohttp,
SQLAlchemy, numpy, the Alembic migrations, the app): a full collection under load was
measured at **78 ms** on the machine of docs/performance.md, i.e. every live call's
audio stalls for four frames at once, which is what the load tester's p99 showed.

* :func:`freeze_startup_heap` moves what start-up created to the permanent generation
  (``gc.freeze()``, Python 3.7+; the documented use is to take long-lived objects out
  of collections): later full collections scan only what calls created since, a few
  milliseconds. Called once, when the gateway starts listening.
* :class:`GcPauseObserver` times every collection through ``gc.callbacks`` and hands
  the pause and generation to ``observe`` (``gateway_gc_pause_seconds``), so a loop-lag
  spike can be told apart from a slow handler.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

__all__ = ["GcPauseObserver", "freeze_startup_heap", "gc_pause_ctx"]

Observe = Callable[[int, float], None]
"""Receives (generation, pause in seconds) for each collection."""


def freeze_startup_heap() -> int:
    """Collect once, then freeze everything alive; returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauseObserver:
    """Times collections via ``gc.callbacks`` while installed.

    Args:
        observe: receives each collection's generation and pause (seconds).
    """

    def __init__(self, observe: Observe) -> None:
        self._observe = observe
        self._started = 0
        self.collections = 0
        """Collections timed so far."""

    def install(self) -> None:
        """Start timing collections (idempotent)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        """Stop timing collections (idempotent)."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # Called by the collector itself: keep it to a clock read and a histogram observe.
        if phase == "start":
            self._started = time.perf_counter_ns()
        elif self._started:
            pause = (time.perf_counter_ns() - self._started) / 1e9
            self._started = 0
            self.collections += 1
            self._observe(int(info["generation"]), pause)


def gc_pause_ctx(observe: Observe) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry that times collections while the app runs."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        observer = GcPauseObserver(observe)
        observer.install()
        try:
            yield
        finally:
            observer.remove()

    return ctx
