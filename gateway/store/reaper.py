"""The reaper: finalizes calls whose gateway died, billing them to their last checkpoint.

A live call's gateway checkpoints it every few seconds (``RYMI_CHECKPOINT_INTERVAL_S``).
When no checkpoint has arrived for ``RYMI_REAPER_STALE_AFTER_S`` the gateway is presumed
dead (SIGKILL, host lost, partition) and the call is finalized with status ``failed``
and end reason ``gateway_lost``. Its billable audio is the last checkpoint's (so the
worst-case under-bill is one checkpoint interval), and it ends at that checkpoint.

Any number of reapers may run at once, on any instance: they go through
:meth:`~gateway.store.ledger.Ledger.finalize`, which writes exactly one final record and
one debit per call whoever races. A reaper that loses a race just moves on.

The threshold must exceed the longest time a healthy call can go without a checkpoint,
including a call whose media stream has not started yet (the call engine's start
timeout): the default 60 s is 12 checkpoint intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway.store.ledger import Ledger
from gateway.store.models import CallEnd, CallRecord, CallStatus
from gateway.store.sql.engine import wall_clock_ms

__all__ = ["GATEWAY_LOST", "Reaper"]

GATEWAY_LOST = "gateway_lost"
"""End reason of calls finalized by the reaper."""

log = logging.getLogger("gateway.store.reaper")


@dataclass(slots=True)
class Reaper:
    """Finds stale live calls and finalizes them.

    Args:
        ledger: the ledger to reap.
        stale_after_ms: how long a live call may go unheard before it is reaped.
        batch: most calls finalized per pass.
        clock: wall-clock milliseconds (injected in tests).
    """

    ledger: Ledger
    stale_after_ms: int
    batch: int = 100
    clock: Callable[[], int] = wall_clock_ms
    queued_expire_after_ms: int = 600_000
    """Outbound calls still queued this long after dialing end as ``no_answer``: the
    carrier stopped ringing long before (ring timeout 60 s) and will not answer now."""

    async def reap_once(self) -> list[CallRecord]:
        """One pass; returns the final records this reaper wrote (races lost excluded)."""
        cutoff = self.clock() - self.stale_after_ms
        reaped: list[CallRecord] = []
        for stale in await self.ledger.stale_calls(cutoff, self.batch):
            end = CallEnd(
                call_id=stale.call_id,
                status=CallStatus.FAILED,
                end_reason=GATEWAY_LOST,
                ended_at_ms=stale.last_seen_ms,
                audio_ms=0,  # the high-water mark keeps the last checkpoint's audio
            )
            result = await self.ledger.finalize(end)
            if result.won:
                log.warning(
                    "reaped call %s (tenant %s): no checkpoint since %d, billed %d units",
                    stale.call_id,
                    result.record.tenant_id,
                    stale.last_seen_ms,
                    result.record.billable_units or 0,
                )
                reaped.append(result.record)
        expired = await self.ledger.expire_queued(
            self.clock() - self.queued_expire_after_ms, self.batch
        )
        if expired:
            log.info("ended %d unanswered outbound calls as no_answer", len(expired))
        return reaped

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Reap every ``interval_s`` seconds until ``stop`` is set; errors are logged."""
        while not stop.is_set():
            try:
                await self.reap_once()
            except Exception:  # a failed pass must not stop the loop; the next one retries
                log.exception("reaper pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
