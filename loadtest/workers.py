"""Playing a set of calls in one process, and in worker processes.

One Python process can play about a hundred calls before its own event loop lags (each
call is 50 messages a second each way, JSON and base64 for Twilio and Plivo). Above
that ``--workers N`` shards the calls over N processes; they share one start instant on
the host's monotonic clock (``CLOCK_MONOTONIC`` is the same in every process), so the
ramp is the one :func:`~loadtest.run.plan_calls` planned, and return their
:class:`~loadtest.player.CallResult` lists (pickled) to the parent, which accounts them.

A soak plays for an hour: its workers *stream* each result to the parent as the call
ends (a queue handed to each worker when it starts, then a :class:`ShardDone` when a
shard is over), so the parent accounts calls in batches and nothing holds an hour of
frame times.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from loadtest import loop as tester_loop
from loadtest.audio import carrier_audio, load_fixture
from loadtest.player import CallPlan, CallResult, play_call
from loadtest.tenants import Setup

if TYPE_CHECKING:
    from loadtest.run import RunConfig

__all__ = ["ShardDone", "Target", "play_plans", "play_shard", "worker_pool"]

# A worker's result queue (soaks). A multiprocessing queue can be handed to a process
# only when it starts (inheritance), not with each task: the pool's initializer sets it.
_SINK: Any = None


@dataclass(frozen=True, slots=True)
class Target:
    """What a worker needs to play calls (picklable)."""

    public_url: str
    setup: Setup
    allowed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ShardDone:
    """The last item a streaming shard puts on its queue."""

    shard: int
    played: int
    """Results it put before this."""


def worker_pool(
    workers: int, cpus: frozenset[int] | None = None, sink: Any = None
) -> ProcessPoolExecutor:
    """``workers`` tester processes, pinned to ``cpus`` (None: inherited).

    ``sink`` (a queue of the ``spawn`` context) is where :func:`play_shard` streams
    results. Workers are spawned, not forked: no inherited event loop or sockets.
    """
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(cpus, sink)
    )


def _init_worker(cpus: frozenset[int] | None, sink: Any) -> None:
    global _SINK  # see _SINK: set once per worker process
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    if sink is not None:
        # Everything a shard put is read before its ShardDone, so nothing is lost by not
        # waiting at exit; and a parent that gave up reading cannot hang the pool's exit.
        sink.cancel_join_thread()
    _SINK = sink


def play_shard(
    target: Target,
    config: RunConfig,
    plans: Sequence[CallPlan],
    origin: float,
    stream: int | None = None,
) -> list[CallResult]:
    """A worker process's entry point: play ``plans`` with its own event loop
    (uvloop when importable, :mod:`loadtest.loop`).

    With ``stream`` (the shard's number), each result goes to the worker's queue as its
    call ends, then a :class:`ShardDone`; the list returned is empty.
    """
    if stream is None:
        return tester_loop.run(play_plans(target, config, plans, origin))
    sink = _SINK
    if sink is None:
        raise RuntimeError("a streaming shard needs a pool made with worker_pool(sink=...)")
    played = 0

    def put(result: CallResult) -> None:
        nonlocal played
        sink.put(result)  # returns at once: the queue's feeder thread pickles and sends
        played += 1

    tester_loop.run(play_plans(target, config, plans, origin, on_result=put))
    sink.put(ShardDone(stream, played))
    return []


async def play_plans(
    target: Target,
    config: RunConfig,
    plans: Sequence[CallPlan],
    origin: float,
    *,
    on_result: Callable[[CallResult], None] | None = None,
) -> list[CallResult]:
    """Play ``plans``, call ``i`` starting at ``origin + start_s`` (monotonic).

    Bounded by ``config.deadline_s`` from ``origin``: then every call hangs up at its
    next frame, and stragglers are given 15 s more. ``on_result`` is given each result
    as its call ends *instead* of keeping it (the list returned is then empty).
    """
    pcm = load_fixture()
    audio = {c: carrier_audio(c, pcm) for c in {p.carrier for p in plans}}
    results: list[CallResult] = []
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(plan: CallPlan) -> None:
            await asyncio.sleep(max(0.0, origin + plan.start_s - time.monotonic()))
            if stop.is_set():
                return
            result = await play_call(
                http,
                plan,
                target.setup.carriers[plan.carrier],
                audio[plan.carrier],
                public_url=target.public_url,
                allowed=target.allowed,
                keep_audio=config.keep_audio,
                stopping=stop.is_set,
            )
            if on_result is None:
                results.append(result)
            else:
                on_result(result)

        tasks = [asyncio.create_task(one(plan)) for plan in plans]
        remaining = origin + config.deadline_s - time.monotonic()
        done, _ = await asyncio.wait(tasks, timeout=max(remaining, 0.0))
        if len(done) < len(tasks):
            stop.set()  # the deadline: calls hang up at their next frame
            _, pending = await asyncio.wait(tasks, timeout=15)
            for task in pending:
                task.cancel()
    return results
