"""The live calls' usage checkpoints, written in batches: one transaction per flush.

Every live call checkpoints its billable audio every ``RYMI_CHECKPOINT_INTERVAL_S``
(docs/state.md). Written one by one, that is one write transaction per call per interval,
and its cost (SQLAlchemy, the aiosqlite thread hand-off, a PostgreSQL round trip) grows
with the number of calls. :class:`CheckpointBatcher` collects them instead:

* :meth:`CheckpointBatcher.submit` never waits. It keeps one pending checkpoint per call,
  the high-water mark of what was submitted (the larger ``audio_ms`` and ``at_ms``): the
  database keeps exactly that anyway (:meth:`~gateway.store.ledger.Ledger.checkpoint`).
* A background task writes everything pending every ``flush_interval_s``, or as soon as
  ``max_pending`` calls are waiting, with one
  :meth:`~gateway.store.ledger.Ledger.checkpoint_many`.
* A failed flush is logged and counted, and its checkpoints are merged back to go with
  the next flush (retried with a growing pause, at most :data:`MAX_RETRY_PAUSE_S`): a
  checkpoint is never dropped silently, and no call ever waits for the database.

Ordering against the call's final record does not matter. ``finalize`` bills the larger
of the call's own final ``audio_ms`` and the stored checkpoint, and the checkpoint's
``UPDATE`` only matches ``status = 'live'`` rows: a checkpoint written before the final
record is at most the final audio, and one written after it (still pending here when the
call ended) matches no row and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Protocol

from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics
from gateway.store.ledger import CheckpointItem, validate_checkpoint

__all__ = [
    "CLOSE_TIMEOUT_S",
    "FLUSH_INTERVAL_S",
    "MAX_PENDING",
    "MAX_RETRY_PAUSE_S",
    "CheckpointBatcher",
    "CheckpointSink",
]

log = logging.getLogger("gateway.server")

FLUSH_INTERVAL_S = 1.0
"""Default pause between flushes: a checkpoint reaches the database this much later (a
crashed gateway bills to a checkpoint at most one interval plus this old)."""
MAX_PENDING = 200
"""Default number of calls waiting that triggers a flush before the interval is up."""
MAX_RETRY_PAUSE_S = 5.0
"""Longest pause between retries while the database fails (one checkpoint interval)."""
CLOSE_TIMEOUT_S = 5.0
"""Default bound of :meth:`CheckpointBatcher.close`: shutdown must not hang on a dead database."""


class CheckpointSink(Protocol):
    """Where batches go: :class:`~gateway.store.ledger.Ledger`."""

    async def checkpoint_many(self, items: list[CheckpointItem]) -> None:
        """Write ``items`` in one transaction (final calls' items change nothing)."""
        ...


class CheckpointBatcher:
    """Collects the live calls' checkpoints and writes them in batches.

    Use as an async context manager (or :meth:`start` and :meth:`close`).

    Args:
        sink: the ledger.
        flush_interval_s: pause between flushes.
        max_pending: calls waiting that trigger a flush before the pause is over.
        metrics: where flush times, counts and failures go (none: not recorded).
    """

    def __init__(
        self,
        sink: CheckpointSink,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_pending: int = MAX_PENDING,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        if not 0 < flush_interval_s <= MAX_RETRY_PAUSE_S:
            raise ValueError(f"flush_interval_s must be in (0, {MAX_RETRY_PAUSE_S}]")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.sink = sink
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.metrics = metrics
        self.written = 0
        """Checkpoints written so far."""
        self.failures = 0
        """Flushes that failed so far."""
        self._pending: dict[str, tuple[int, int]] = {}
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._retry_pause = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Calls whose checkpoint waits to be written."""
        return len(self._pending)

    def submit(self, call_id: str, audio_ms: int, at_ms: int) -> None:
        """Queue a checkpoint of ``call_id`` (never waits); merged with one still pending.

        Raises:
            ValidationError: a malformed checkpoint (a bug of the caller's: raised here,
                where it can be seen, rather than failing a whole batch later).
        """
        validate_checkpoint(call_id, audio_ms, at_ms)
        if self._closed:
            log.warning("call %s: checkpoint after shutdown not written", call_id)
            return
        self._merge(call_id, audio_ms, at_ms)
        if len(self._pending) >= self.max_pending and not self._retry_pause:
            self._wake.set()

    def start(self) -> None:
        """Start the flush task (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="checkpoints")

    async def flush(self) -> bool:
        """Write everything pending now; False if the write failed (kept for a retry)."""
        async with self._flushing:
            if not self._pending:
                return True
            items = [(cid, audio, at) for cid, (audio, at) in self._pending.items()]
            self._pending = {}
            started = time.perf_counter()
            try:
                await self.sink.checkpoint_many(items)
            except BaseException as exc:
                for item in items:
                    self._merge(*item)
                if not isinstance(exc, Exception):
                    raise  # cancelled (close() timed out): pending again, and logged there
                self._failed(exc, len(items))
                return False
            self._retry_pause = 0.0
            self.written += len(items)
            if self.metrics is not None:
                self.metrics.checkpoints_flushed(len(items), time.perf_counter() - started)
            return True

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the flush task and write what is still pending, within ``timeout_s``.

        Checkpoints submitted later are logged and dropped; what could not be written is
        logged (the reaper bills those calls from their last stored checkpoint).
        """
        self._closed = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                if self._task is not None:
                    await self._task  # its last flush; cancelled with it on timeout
                await self.flush()
        if self._pending:
            log.error("checkpoints of %d calls not written at shutdown", len(self._pending))

    async def __aenter__(self) -> CheckpointBatcher:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------------------

    def _merge(self, call_id: str, audio_ms: int, at_ms: int) -> None:
        pending = self._pending.get(call_id)
        if pending is not None:
            audio_ms, at_ms = max(audio_ms, pending[0]), max(at_ms, pending[1])
        self._pending[call_id] = (audio_ms, at_ms)

    def _failed(self, exc: Exception, count: int) -> None:
        self.failures += 1
        if self.metrics is not None:
            self.metrics.checkpoint_flush_failed()
        self._retry_pause = min(
            max(2 * self._retry_pause, self.flush_interval_s), MAX_RETRY_PAUSE_S
        )
        if isinstance(exc, GatewayError):  # its message names the operation, never values
            log.warning(
                "checkpoints of %d calls not written (%s); retrying in %.2f s",
                count,
                exc,
                self._retry_pause,
            )
        else:  # not a database failure: a bug, with its traceback
            log.exception("checkpoints of %d calls not written; retrying", count)

    async def _run(self) -> None:
        while not self._closed:
            pause = self._retry_pause or self.flush_interval_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()
