"""Event-loop stalls: *where* the loop was while it did not turn.

The lag monitor (:mod:`gateway.ops.looplag`) says *that* the loop woke a timer late;
this says what held it. Every live call's audio waits while the loop does not turn,
and a stall longer than the pacer's lead (60 ms) is a gap the caller hears.

* A heartbeat on the loop (a timer every ``beat_s``) stamps the monotonic clock.
* A daemon thread looks at the stamp every ``beat_s``. When it is older than
  ``threshold_s`` the loop is stalled, and the thread samples the loop thread's Python
  stack (``sys._current_frames()``) at each look until the heartbeat comes back.
* It then reports a :class:`Stall`: how long, how many samples it took against how many
  the stall's length allows, and the innermost frames seen most often.
* Each sample also names the loop's running task, and, when the loop thread is inside a
  greenlet, the code that entered it (:func:`greenlet_caller`). The thread's stack alone
  cannot say: SQLAlchemy's async engine runs the driver in a greenlet, whose frames end
  at the sync function it was given, so a statement that waits for the disk shows
  ``do_execute ← …`` and nothing of which gateway operation issued it. The loop thread's
  main greenlet is suspended meanwhile, and its frames lead back to that operation.

Few samples for a long stall mean that the whole process did not run, not that the loop
was busy: the watcher thread needs the CPU too. The host took the CPU (steal, a paused
vCPU), or another process on the same core ran. Frames are ``file:line function`` only,
never locals, so neither audio nor secrets reach the log.

A pause the gateway makes on purpose (the start-up collection of
:func:`~gateway.ops.gcpause.freeze_startup_heap`, before the listener opens) runs inside
:meth:`StallWatch.excused` and is not reported: a warning at every start would teach
operators to ignore the warning.

The thread takes the GIL once per ``beat_s`` (10 ms by default) for a clock read: about
a hundred short GIL hand-offs a second, against ~30 000 messages a second at 300 calls.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import sysconfig
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePath
from types import FrameType
from typing import Any

from aiohttp import web

try:  # SQLAlchemy's async engine needs it; without it nothing runs in a greenlet
    import greenlet
except ImportError:  # pragma: no cover
    greenlet = None

__all__ = [
    "STALL_WATCH",
    "Stall",
    "StallLog",
    "StallWatch",
    "describe",
    "greenlet_caller",
    "stall_watch_ctx",
    "where",
]

log = logging.getLogger("gateway.server")

_FRAMES_SHOWN = 3
"""Innermost frames kept per sample: enough to name the call that blocked."""
_PLACES_SHOWN = 3
"""Most frequent places in a report's log line."""


@dataclass(frozen=True, slots=True)
class Stall:
    """One stall of the event loop, as the watcher saw it."""

    duration_s: float
    """How much later than due the first heartbeat after it ran, seconds."""
    samples: int
    """Stacks sampled during it."""
    expected_samples: int
    """Samples its length allows at one per ``beat_s`` plus the GIL's switch interval (a
    loop running Python lets the watcher in only that often); more than twice
    ``samples`` means the process did not run."""
    places: tuple[tuple[str, int], ...]
    """The sampled innermost frames (``where``), most frequent first, with their counts."""


def where(frame: FrameType, depth: int = _FRAMES_SHOWN) -> str:
    """``frame`` and its callers, innermost first: ``pkg/file.py:12 name ← ...``."""
    parts: list[str] = []
    current: FrameType | None = frame
    while current is not None and len(parts) < depth:
        code = current.f_code
        path = PurePath(code.co_filename)
        parts.append(f"{'/'.join(path.parts[-2:])}:{current.f_lineno} {code.co_name}")
        current = current.f_back
    return " ← ".join(parts)


_LIBRARY_PREFIXES = tuple(
    {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"], "<"}
)
"""The standard library's files, and frozen modules (``<frozen …>``)."""


def _in_library(filename: str) -> bool:
    return filename.startswith(_LIBRARY_PREFIXES) or "site-packages" in filename


def greenlet_caller(frame: FrameType | None, depth: int = 2) -> str | None:
    """The innermost ``depth`` frames of ``frame``'s stack outside libraries (see
    :func:`where`); None when there are none. ``frame`` is a suspended greenlet's top."""
    parts: list[str] = []
    current = frame
    while current is not None and len(parts) < depth:
        if not _in_library(current.f_code.co_filename):
            parts.append(where(current, depth=1))
        current = current.f_back
    return " ← ".join(parts) or None


def describe(stall: Stall) -> str:
    """The log line of ``stall``."""
    line = f"event loop stalled {stall.duration_s * 1000:.0f} ms"
    if stall.samples * 2 < stall.expected_samples:
        line += (
            f" ({stall.samples} of {stall.expected_samples} samples: the process itself"
            " did not run, e.g. the host took the CPU)"
        )
    shown = "; ".join(f"{count}x {place}" for place, count in stall.places[:_PLACES_SHOWN])
    return f"{line}; where the loop was: {shown or 'not sampled'}"


class StallWatch:
    """Watches one event loop from a daemon thread; see the module docstring.

    Args:
        report: receives each :class:`Stall` (called on the watcher thread).
        threshold_s: heartbeat age above which the loop counts as stalled.
        beat_s: heartbeat period, and the watcher's sampling period.

    Raises:
        ValueError: ``beat_s`` not > 0, or ``threshold_s`` not above ``beat_s``.
    """

    def __init__(
        self, report: Callable[[Stall], None], *, threshold_s: float = 0.1, beat_s: float = 0.01
    ) -> None:
        if not beat_s > 0 or not threshold_s > beat_s:
            raise ValueError(
                f"expected 0 < beat_s < threshold_s, got {beat_s!r} and {threshold_s!r}"
            )
        self._report = report
        self._threshold_s = threshold_s
        self._beat_s = beat_s
        self._beat_at = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._main_greenlet: Any = None
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._excused = False

    def start(self) -> None:
        """Start the heartbeat on the running loop and the watcher thread."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._main_greenlet = greenlet.getcurrent() if greenlet is not None else None
        self._stop.clear()
        self._beat()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop both (the thread is joined)."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @contextmanager
    def excused(self) -> Iterator[None]:
        """Run a block that holds the loop on purpose: a stall during it is not reported.

        Used from the loop's thread. The heartbeat is stamped again as the block ends, so
        its length is not counted against the loop after it either.
        """
        self._excused = True
        try:
            yield
        finally:
            self._beat_at = time.monotonic()
            self._excused = False

    def _beat(self) -> None:
        self._beat_at = time.monotonic()
        if self._loop is not None and not self._stop.is_set():
            self._handle = self._loop.call_later(self._beat_s, self._beat)

    def _watch(self) -> None:
        places: Counter[str] = Counter()
        stalled_since: float | None = None
        while not self._stop.wait(self._beat_s):
            if self._excused:
                places, stalled_since = Counter(), None
                continue
            beat_at = self._beat_at
            if time.monotonic() - beat_at > self._threshold_s:
                stalled_since = beat_at
                places[self._sample()] += 1
            elif stalled_since is not None:
                # The beat after the stall was due one period after the one before it.
                duration = beat_at - stalled_since - self._beat_s
                # A loop running Python hands the GIL over at the switch interval only.
                period = self._beat_s + sys.getswitchinterval()
                expected = max(1, round((duration - self._threshold_s) / period))
                self._report(Stall(duration, places.total(), expected, tuple(places.most_common())))
                places, stalled_since = Counter(), None

    def _sample(self) -> str:
        """Where the loop thread is now, in which task, and for whom (module docstring)."""
        frame = sys._current_frames().get(self._loop_thread)
        place = where(frame) if frame is not None else "not running Python"
        task = asyncio.current_task(self._loop) if self._loop is not None else None
        main = self._main_greenlet
        # Suspended (it has a frame) only while the loop thread runs a child greenlet.
        caller = greenlet_caller(main.gr_frame) if main is not None else None
        context = [f"task {task.get_name()}"] if task is not None else []
        context += [f"from {caller}"] if caller is not None else []
        return f"{place} (in {', '.join(context)})" if context else place


STALL_WATCH = web.AppKey("stall_watch", StallWatch)
"""The app's watch, set by :func:`stall_watch_ctx` (for :meth:`StallWatch.excused`)."""


def stall_watch_ctx(
    *, threshold_s: float = 0.1
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry that logs each stall (warning) while the app runs.

    The watch is kept under :data:`STALL_WATCH`.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        watch = app[STALL_WATCH] = StallWatch(StallLog().report, threshold_s=threshold_s)
        watch.start()
        try:
            yield
        finally:
            watch.stop()

    return ctx


class StallLog:
    """Logs stalls as warnings, at most one line per ``every_s``; the rest are counted.

    A saturated loop stalls again and again: the first line says where, the next one
    how many more there were.
    """

    def __init__(self, every_s: float = 10.0) -> None:
        self._every_s = every_s
        self._last_at = -every_s
        self.suppressed = 0
        """Stalls not logged since the last line."""

    def report(self, stall: Stall) -> None:
        """Log ``stall`` unless a line went out less than ``every_s`` ago."""
        now = time.monotonic()
        if now - self._last_at < self._every_s:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more stalls not logged before it)" if self.suppressed else ""
        self._last_at, self.suppressed = now, 0
        log.warning("%s%s", describe(stall), more)
