"""Playing a set of calls in one process, and in worker processes.

One Python process can play about a hundred calls before its own event loop lags (each
call is 50 messages a second each way, JSON and base64 for Twilio and Plivo). Above
that ``--workers N`` shards the calls over N processes; they share one start instant on
the host's monotonic clock (``CLOCK_MONOTONIC`` is the same in every process), so the
ramp is the one :func:`~loadtest.run.plan_calls` planned, and return their
:class:`~loadtest.player.CallResult` lists (pickled) to the parent, which accounts them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from loadtest.audio import carrier_audio, load_fixture
from loadtest.player import CallPlan, CallResult, play_call
from loadtest.tenants import Setup

if TYPE_CHECKING:
    from loadtest.run import RunConfig

__all__ = ["Target", "play_plans", "play_shard"]


@dataclass(frozen=True, slots=True)
class Target:
    """What a worker needs to play calls (picklable)."""

    public_url: str
    setup: Setup
    allowed: tuple[str, ...] = ()


def play_shard(
    target: Target, config: RunConfig, plans: Sequence[CallPlan], origin: float
) -> list[CallResult]:
    """A worker process's entry point: play ``plans`` with its own event loop."""
    return asyncio.run(play_plans(target, config, plans, origin))


async def play_plans(
    target: Target, config: RunConfig, plans: Sequence[CallPlan], origin: float
) -> list[CallResult]:
    """Play ``plans``, call ``i`` starting at ``origin + start_s`` (monotonic).

    Bounded by ``config.deadline_s`` from ``origin``: then every call hangs up at its
    next frame, and stragglers are given 15 s more.
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
            results.append(result)

        tasks = [asyncio.create_task(one(plan)) for plan in plans]
        remaining = origin + config.deadline_s - time.monotonic()
        done, _ = await asyncio.wait(tasks, timeout=max(remaining, 0.0))
        if len(done) < len(tasks):
            stop.set()  # the deadline: calls hang up at their next frame
            _, pending = await asyncio.wait(tasks, timeout=15)
            for task in pending:
                task.cancel()
    return results
