"""Graceful drain on SIGTERM (reliability.md §5.5; docs/operations.md, "Drain").

A carrier's media stream cannot move to another instance, so stopping a gateway means
letting its calls finish:

1. First SIGTERM (or SIGINT): the instance *drains*. ``on_draining(True)`` runs at once
   (the engine sets ``draining``: ``/readyz`` answers 503 and the answer route refuses
   new calls with 503 so the load balancer or the carrier's fallback URL sends them to
   another instance; ``gateway_draining`` turns 1). Live calls go on.
2. The drain ends when the last live call ends, or at the drain deadline
   (``RYMI_DRAIN_DEADLINE_S`` after the first signal), or at a second signal. In the
   last two cases ``hang_up_all()`` ends the remaining calls (reason ``drain``: each is
   finalized and billed), and the drain waits up to ``hangup_timeout_s`` for them.
3. :meth:`Drain.run` returns how many calls were still live at the end (0 = clean);
   the process then shuts its resources down and exits 0.

The class knows nothing of the engine: it takes callables, so it is tested alone and
wired in ``serve`` (:meth:`install` adds the signal handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["HANGUP_TIMEOUT_S", "Drain", "DrainPhase"]

log = logging.getLogger("gateway.serve")

HANGUP_TIMEOUT_S = 30.0
"""Default time hung-up calls get to finalize (carrier hang-up, final record), seconds."""


class DrainPhase(enum.StrEnum):
    """Where the instance is in its shutdown."""

    SERVING = "serving"
    DRAINING = "draining"
    """No new calls; live calls run to their end."""
    HANGING_UP = "hanging_up"
    """Deadline or second signal: the remaining calls are being ended."""
    DONE = "done"


class Drain:
    """SIGTERM semantics for one gateway process.

    Args:
        live_calls: how many calls run here now.
        wait_empty: returns once no call runs here.
        hang_up_all: asks every live call to end with reason ``drain`` (non-blocking).
        on_draining: called once with True when the drain starts.
        deadline_s: seconds from the first signal after which the rest are hung up;
            None waits for the calls (each is bounded by its maxCallDuration).
        hangup_timeout_s: how long hung-up calls get to finalize, seconds.
    """

    def __init__(
        self,
        *,
        live_calls: Callable[[], int],
        wait_empty: Callable[[], Awaitable[object]],
        hang_up_all: Callable[[], None],
        on_draining: Callable[[bool], None] | None = None,
        deadline_s: float | None = None,
        hangup_timeout_s: float = HANGUP_TIMEOUT_S,
    ) -> None:
        self._live_calls = live_calls
        self._wait_empty = wait_empty
        self._hang_up_all = hang_up_all
        self._on_draining = on_draining
        self._deadline_s = deadline_s
        self._hangup_timeout_s = hangup_timeout_s
        self.phase = DrainPhase.SERVING
        self._requested = asyncio.Event()
        self._hang_up_now = asyncio.Event()
        self._installed: tuple[asyncio.AbstractEventLoop, tuple[signal.Signals, ...]] | None = None

    @property
    def draining(self) -> bool:
        """True from the first signal on (what ``/readyz`` asks)."""
        return self.phase is not DrainPhase.SERVING

    def request(self) -> None:
        """A stop signal: the first starts the drain, the next hangs up the rest."""
        if self.phase is DrainPhase.SERVING:
            self.phase = DrainPhase.DRAINING
            log.info("draining: no new calls; %d live call(s) run to their end", self._live_calls())
            if self._on_draining is not None:
                self._on_draining(True)
            self._requested.set()
        elif self.phase is DrainPhase.DRAINING:
            log.info("second stop signal: hanging up %d live call(s)", self._live_calls())
            self._hang_up_now.set()

    def install(
        self,
        loop: asyncio.AbstractEventLoop,
        signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        """Route ``signals`` to :meth:`request` (Unix event loops).

        Once :meth:`run` returns, the same signals are *ignored*: the process is on its
        way out, and asyncio would otherwise restore the default action when the loop
        closes, so a late signal (a supervisor forwarding a second SIGTERM) would kill
        the process during its clean shutdown and turn exit 0 into -15.
        """
        self._installed = (loop, tuple(signals))
        for sig in self._installed[1]:
            loop.add_signal_handler(sig, self.request)

    def _ignore_further_signals(self) -> None:
        if self._installed is None:
            return
        loop, signals = self._installed
        for sig in signals:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        self._installed = None

    async def wait_requested(self) -> None:
        """Return once the first stop signal arrived."""
        await self._requested.wait()

    async def run(self) -> int:
        """Wait for the signal, then for the calls; returns the calls still live at the end."""
        await self.wait_requested()
        empty = asyncio.ensure_future(self._wait_empty())
        second = asyncio.ensure_future(self._hang_up_now.wait())
        try:
            done, _ = await asyncio.wait(
                {empty, second}, timeout=self._deadline_s, return_when=asyncio.FIRST_COMPLETED
            )
            if empty not in done:
                self.phase = DrainPhase.HANGING_UP
                why = "second signal" if second in done else "drain deadline"
                log.info("%s: hanging up %d live call(s)", why, self._live_calls())
                self._hang_up_all()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(empty), self._hangup_timeout_s)
        finally:
            for task in (empty, second):
                task.cancel()
            await asyncio.gather(empty, second, return_exceptions=True)
        self.phase = DrainPhase.DONE
        self._ignore_further_signals()
        left = self._live_calls()
        if left:
            log.warning("drain ended with %d call(s) still live", left)
        else:
            log.info("drain complete: no live calls")
        return left
