"""Event-loop stalls: the watcher thread names what held the loop, and only then."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy.util import greenlet_spawn

from gateway.ops import Stall, StallLog, StallWatch
from gateway.ops.stallwatch import describe, where


async def _watched(work: Callable[[], object], *, settle_s: float = 0.1) -> list[Stall]:
    """Run ``work`` on the loop under a watch (threshold 100 ms), and await what it returns
    if that is awaitable (a task); the stalls it reported."""
    stalls: list[Stall] = []
    watch = StallWatch(stalls.append, threshold_s=0.1, beat_s=0.005)
    watch.start()
    try:
        await asyncio.sleep(settle_s)
        result = work()
        if inspect.isawaitable(result):
            await result
        await asyncio.sleep(settle_s)  # the heartbeat comes back; the watcher reports
    finally:
        watch.stop()
    return stalls


def _sleep_on_the_loop() -> None:
    time.sleep(0.4)  # a blocking call, as a sync client or a disk flush would be


def _spin_on_the_loop() -> None:
    end = time.monotonic() + 0.4
    while time.monotonic() < end:  # pure Python holding the GIL: sampled all the same
        pass


@pytest.mark.parametrize("work", [_sleep_on_the_loop, _spin_on_the_loop])
async def test_a_blocked_loop_is_reported_once_with_the_function_that_held_it(
    work: Callable[[], None],
) -> None:
    # (A busy test machine may pause the process too: only the stall of ``work`` counts.)
    stalls = [s for s in await _watched(work) if any(work.__name__ in p for p, _ in s.places[:1])]
    assert len(stalls) == 1
    stall = stalls[0]
    assert stall.duration_s >= 0.35
    assert stall.samples >= 5
    place, count = stall.places[0]
    assert place.startswith("ops/test_stallwatch.py:")
    assert work.__name__ in place.split(" ← ")[0]
    assert count >= stall.samples // 2
    assert "did not run" not in describe(stall)


async def test_a_pause_made_on_purpose_is_not_reported_but_the_next_stall_is() -> None:
    stalls: list[Stall] = []
    watch = StallWatch(stalls.append, threshold_s=0.1, beat_s=0.005)
    watch.start()
    try:
        await asyncio.sleep(0.1)
        with watch.excused():  # as the gateway's start-up collection is
            _sleep_on_the_loop()
        await asyncio.sleep(0.1)
        _spin_on_the_loop()
        await asyncio.sleep(0.1)
    finally:
        watch.stop()
    tops = [s.places[0][0] for s in stalls if s.places]
    assert not [p for p in tops if "_sleep_on_the_loop" in p]
    assert [p for p in tops if "_spin_on_the_loop" in p]


def _statement_waiting_for_the_disk() -> None:
    time.sleep(0.4)  # as sqlite3 does inside do_execute on a busy disk


async def _checkpoint_batch() -> None:
    # SQLAlchemy's async engine runs the driver in a greenlet: the stack sampled from the
    # loop's thread ends at the sync function and says nothing of this coroutine.
    await greenlet_spawn(_statement_waiting_for_the_disk)


async def test_a_stall_in_a_greenlet_names_the_task_and_coroutine_that_issued_it() -> None:
    stalls = await _watched(lambda: asyncio.create_task(_checkpoint_batch(), name="checkpoints"))
    places = [p for s in stalls for p, _ in s.places if "_statement_waiting_for_the_disk" in p]
    assert places
    thread_stack, _, context = places[0].partition(" (in ")
    assert "_checkpoint_batch" not in thread_stack  # the greenlet's frames stop short
    assert context.startswith("task checkpoints, from ops/test_stallwatch.py:")
    assert context.removesuffix(")").split(" ← ")[0].endswith(" _checkpoint_batch")


async def test_outside_a_greenlet_the_sample_names_only_the_task() -> None:
    async def spin_in_a_task() -> None:
        _spin_on_the_loop()

    stalls = await _watched(lambda: asyncio.create_task(spin_in_a_task(), name="spinner"))
    places = [p for s in stalls for p, _ in s.places if "_spin_on_the_loop" in p]
    assert places
    assert places[0].endswith(" (in task spinner)")  # the stack itself shows the caller


async def test_a_loop_that_keeps_turning_reports_nothing() -> None:
    async def busy_but_turning() -> None:
        for _ in range(30):
            time.sleep(0.005)  # noqa: ASYNC251 (blocking on purpose: 5 ms, under the threshold)
            await asyncio.sleep(0)

    stalls: list[Stall] = []
    watch = StallWatch(stalls.append, threshold_s=0.2, beat_s=0.005)
    watch.start()
    try:
        await busy_but_turning()
        await asyncio.sleep(0.1)
    finally:
        watch.stop()
    assert stalls == []


async def test_stop_ends_the_thread_and_the_heartbeat() -> None:
    watch = StallWatch(lambda _: None, threshold_s=0.05, beat_s=0.005)
    watch.start()
    assert any(t.name == "stall-watch" for t in threading.enumerate())
    await asyncio.sleep(0.02)
    watch.stop()
    assert not any(t.name == "stall-watch" for t in threading.enumerate())
    last_beat = watch._beat_at
    await asyncio.sleep(0.03)
    assert watch._beat_at == last_beat  # the heartbeat timer is gone too


def test_few_samples_for_a_long_stall_mean_the_process_did_not_run() -> None:
    busy = Stall(0.2, 18, 20, (("gateway/store/x.py:3 commit", 18),))
    paused = Stall(0.2, 2, 20, (("not running Python", 2),))
    assert describe(busy) == (
        "event loop stalled 200 ms; where the loop was: 18x gateway/store/x.py:3 commit"
    )
    assert "2 of 20 samples: the process itself did not run" in describe(paused)


def test_where_names_the_innermost_frames_first() -> None:
    def inner() -> str:
        import sys

        return where(sys._getframe(), depth=2)

    def outer() -> str:
        return inner()

    text = outer()
    first, second = text.split(" ← ")
    assert first.startswith("ops/test_stallwatch.py:")
    assert first.endswith(" inner")
    assert second.endswith(" outer")


def test_the_log_holds_back_stalls_within_its_interval_and_counts_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stall = Stall(0.15, 10, 10, (("a.py:1 f", 10),))
    held = StallLog(every_s=3600)
    with caplog.at_level(logging.WARNING, logger="gateway.server"):
        held.report(stall)
        held.report(stall)
        held.report(stall)
    assert [r.getMessage() for r in caplog.records] == [describe(stall)]
    assert held.suppressed == 2
    caplog.clear()
    every = StallLog(every_s=0)
    every.suppressed = 2  # as if two were held back before this one
    with caplog.at_level(logging.WARNING, logger="gateway.server"):
        every.report(stall)
    assert caplog.records[0].getMessage().endswith("(2 more stalls not logged before it)")


@pytest.mark.parametrize(("threshold_s", "beat_s"), [(0.1, 0.0), (0.01, 0.01), (0.01, 0.05)])
def test_bad_periods_are_refused(threshold_s: float, beat_s: float) -> None:
    with pytest.raises(ValueError, match="beat_s < threshold_s"):
        StallWatch(lambda _: None, threshold_s=threshold_s, beat_s=beat_s)
