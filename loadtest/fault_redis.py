"""``rymi-loadtest fault restart-redis``: restart the fleet's Redis in the middle of load.

Two spawned gateways share one database and a private redis-server, with the short
fleet timings of ``kill-gateway``. The tenant's limit is exactly the calls played (half
on each gateway), so the tenant is full for the whole hold. From the moment the last
call started, an extra call is offered every 0.2 s, to each gateway in turn. Mid-hold
the redis-server gets SIGKILL and is started again, empty, on the same port. Then:

* **Live calls are not dropped**: every call completes, nothing lost, duplicated or
  reordered (per frame with ``--agent external``), each billed what the tester sent.
* **Admission never exceeds the limit**: no extra call is admitted while the calls are
  live, before, during or after the restart (busy, or ``coordination_unavailable``
  while Redis is down or its recovery barrier runs).
* **Admission reopens by itself**: once the calls have ended, a new call is admitted
  within the barrier (12 s, docs/coordination.md) plus a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import aiohttp
from rich.console import Console

from loadtest.audio import carrier_audio, load_fixture
from loadtest.environment import Environment, EnvOptions, environment, wait_port
from loadtest.fault_kill import FLEET_ENV, first_admission, set_limit
from loadtest.player import CallPlan, play_call
from loadtest.procs import Spawned
from loadtest.render import mark
from loadtest.report import account, check_billing
from loadtest.run import RawRun, RunConfig, agent_records, plan_calls
from loadtest.workers import Target, play_plans

__all__ = ["run_restart_redis"]

_BARRIER_S = 12.0  # the Redis coordinator's default recovery barrier


async def run_restart_redis(args: argparse.Namespace, options: EnvOptions, console: Console) -> int:
    """Run the scenario; returns the exit code."""
    carrier = next(iter(options.carriers))
    options = replace(
        options, carriers=(carrier,), gateways=2, gateway_env=options.gateway_env + FLEET_ENV
    )
    per_gateway = max(1, args.healthy // 2)
    config = RunConfig(calls=per_gateway, mix={carrier: 1}, ramp=20.0, hold_s=args.hold)
    async with environment(options) as env:
        if env.redis is None:
            raise RuntimeError("restart-redis needs the private redis-server (no --redis-url)")
        await set_limit(env, carrier, 2 * per_gateway)
        for n in (0, 1):
            if await first_admission(env, carrier, n, time.monotonic(), 30.0) is None:
                raise RuntimeError(f"gateway {'AB'[n]} never admitted a call")
        began = time.monotonic()
        plans = plan_calls(config)
        origin = began + 0.2
        sides = [
            asyncio.create_task(
                play_plans(Target(base, env.setup, env.allowed), config, plans, origin)
            )
            for base in env.bases
        ]
        await asyncio.sleep(0.2 + plans[-1].start_s + 0.5)
        live = asyncio.Event()
        live.set()
        offers: list[tuple[float, str | None]] = []
        pressure = asyncio.create_task(_offer(env, carrier, live, offers))
        async with _restarted_redis(env, args.kill_after) as restarted_at:
            results = [r for side in await asyncio.gather(*sides) for r in side]
            live.clear()
            await pressure
            ended = time.monotonic()
            reopen_s = await first_admission(env, carrier, 1, ended, _BARRIER_S + 15)
        raw = RawRun(replace(config, calls=len(results)), results, began, ended, began)
        if env.agent_stats_url:
            raw.agent_calls = await agent_records(env.agent_stats_url)
        assert env.database_url is not None
        agents = raw.agent_calls or None
        report = account(raw, await check_billing(env.database_url, results, agent_calls=agents))
    result = _verdict(report, offers, restarted_at, reopen_s, 2 * per_gateway)
    _print(console, result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0 if result["ok"] else 1


@contextlib.asynccontextmanager
async def _restarted_redis(env: Environment, after_s: float) -> Any:
    """SIGKILL the redis-server ``after_s`` from now and start it again, empty."""
    assert env.redis is not None
    old = env.redis
    restarted: list[float] = []
    fresh: list[Spawned] = []

    async def restart() -> None:
        await asyncio.sleep(after_s)
        old.kill()
        await asyncio.sleep(1.0)  # Redis is down for a second
        fresh.append(Spawned(old.argv, old.env, old.log, grace_s=5).__enter__())
        port = int(old.argv[old.argv.index("--port") + 1])
        await wait_port(port)
        restarted.append(time.monotonic())

    task = asyncio.create_task(restart())
    try:
        yield restarted
    finally:
        await asyncio.gather(task, return_exceptions=True)
        for spawned in fresh:
            spawned.stop()


async def _offer(
    env: Environment, carrier: str, live: asyncio.Event, offers: list[tuple[float, str | None]]
) -> None:
    """While ``live``, offer a 0.1 s call every 0.2 s to each gateway in turn."""
    audio = carrier_audio(carrier, load_fixture())
    async with aiohttp.ClientSession() as http:
        n = 0
        while live.is_set():
            n += 1
            plan = CallPlan(20_000 + n, carrier, 0.0, 0.1)
            probe = await play_call(
                http, plan, env.setup.carriers[carrier], audio, public_url=env.bases[n % 2]
            )
            admitted = probe.answer_status == 200 and not probe.refusal
            offers.append((time.monotonic(), None if admitted else (probe.refusal or probe.error)))
            await asyncio.sleep(0.2)


def _verdict(
    report: dict[str, Any],
    offers: list[tuple[float, str | None]],
    restarted: list[float],
    reopen_s: float | None,
    calls: int,
) -> dict[str, Any]:
    frames = report["frames"]
    live_ok = (
        report["calls"]["completed"] == calls
        and report["calls"]["failed"] == 0
        and frames.get("loss_ratio", 0) == 0
        and not any(frames.get(k, 0) for k in ("duplicated", "reordered"))
        and report["billing"].get("mismatched", 0) == 0
    )
    admitted = sum(1 for _, refusal in offers if refusal is None)
    limit_s = _BARRIER_S + 5.0
    return {
        "fault": "restart-redis",
        "calls": calls,
        "redis_restarted": bool(restarted),
        "live_calls": {"ok": live_ok, "report": report},
        "extra_offers": len(offers),
        "extra_offers_by_outcome": dict(Counter(r or "admitted" for _, r in offers)),
        "limit_held": admitted == 0 and bool(offers),
        "reopen_s": None if reopen_s is None else round(reopen_s, 2),
        "reopen_limit_s": limit_s,
        "reopened": reopen_s is not None and reopen_s <= limit_s,
        "ok": live_ok
        and admitted == 0
        and bool(restarted)
        and reopen_s is not None
        and reopen_s <= limit_s,
    }


def _print(console: Console, result: dict[str, Any]) -> None:
    report = result["live_calls"]["report"]
    console.print(
        f"live calls: {report['calls']['completed']}/{result['calls']} completed, loss ratio "
        f"{report['frames'].get('loss_ratio')}, billing mismatches "
        f"{report['billing'].get('mismatched', 0)} {mark(result['live_calls']['ok'])}"
    )
    console.print(
        f"redis restarted: {result['redis_restarted']}; {result['extra_offers']} extra calls "
        f"offered while full: {result['extra_offers_by_outcome']} {mark(result['limit_held'])}"
    )
    console.print(
        f"admission reopened {result['reopen_s']} s after the calls ended "
        f"(limit {result['reopen_limit_s']} s) {mark(result['reopened'])}"
    )
