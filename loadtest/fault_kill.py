"""``rymi-loadtest fault kill-gateway``: SIGKILL one gateway of two in the middle of load.

Two spawned gateways share one database and a Redis (a private redis-server unless
``--redis-url``), with short fleet timings (checkpoints every second, lease TTL 5 s,
reaper every second, a call stale after 3 s). The tenant's concurrency limit is exactly
the calls played, half answered by gateway A, half by B. Mid-hold, A's whole process
group gets SIGKILL. Then:

* **B is untouched**: B's calls complete, nothing lost, duplicated or reordered (per
  frame with ``--agent external``), each billed what the tester sent.
* **Slots come back within the lease TTL**: a new call is offered to B every 0.25 s; it
  is refused (busy) while A's dead leases hold the tenant's limit, and admitted once
  they expire. The time from the kill to the first admission must be at most the TTL
  plus one renew interval and a second of slack.
* **A's calls are billed to their last checkpoint**: B's reaper finalizes them; each
  CDR's audio is at most what the tester sent before the kill and at least that minus
  one checkpoint interval and a second, and its units are those of that audio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from dataclasses import replace
from typing import Any

import aiohttp
from rich.console import Console

from gateway.server.answer import call_id_for
from loadtest.audio import carrier_audio, load_fixture
from loadtest.environment import Environment, EnvOptions, environment
from loadtest.player import CallPlan, CallResult, play_call
from loadtest.render import mark
from loadtest.report import account, check_billing
from loadtest.run import RawRun, RunConfig, agent_records, plan_calls
from loadtest.schedule import FRAME_S
from loadtest.workers import Target, play_plans

__all__ = ["FLEET_ENV", "first_admission", "run_kill_gateway", "set_limit"]

FLEET_ENV = (
    ("RYMI_CHECKPOINT_INTERVAL_S", "1"),
    ("RYMI_REAPER_STALE_AFTER_S", "3"),
    ("RYMI_REAPER_INTERVAL_S", "1"),
    ("RYMI_LEASE_TTL_S", "5"),
    ("RYMI_LEASE_RENEW_INTERVAL_S", "1"),
)
_TTL_S, _RENEW_S, _CHECKPOINT_S = 5.0, 1.0, 1.0


async def run_kill_gateway(args: argparse.Namespace, options: EnvOptions, console: Console) -> int:
    """Run the scenario; returns the exit code."""
    carrier = next(iter(options.carriers))
    options = replace(
        options,
        carriers=(carrier,),
        gateways=2,
        gateway_env=options.gateway_env + FLEET_ENV,
    )
    per_gateway = max(1, args.healthy // 2)
    config = RunConfig(calls=per_gateway, mix={carrier: 1}, ramp=20.0, hold_s=args.hold)
    async with environment(options) as env:
        await set_limit(env, carrier, 2 * per_gateway)
        # A brand-new Redis starts with the coordination barrier (docs/coordination.md,
        # 12 s): wait until both gateways admit before the load starts.
        for n in (0, 1):
            if await first_admission(env, carrier, n, time.monotonic(), 30.0) is None:
                raise RuntimeError(f"gateway {'AB'[n]} never admitted a call")
        began = time.monotonic()
        origin = began + 0.2
        plans = plan_calls(config)
        side_a = asyncio.create_task(play_plans(_target(env, 0), config, plans, origin))
        side_b = asyncio.create_task(play_plans(_target(env, 1), config, plans, origin))
        await asyncio.sleep(plans[-1].start_s + args.kill_after)
        env.gateways[0].kill()
        killed_at = time.monotonic()
        reuse_s = await first_admission(env, carrier, 1, killed_at, _TTL_S + 15)
        results_a, results_b = await side_a, await side_b
        raw_b = RawRun(config, results_b, began, time.monotonic(), began + plans[-1].start_s)
        if env.agent_stats_url:
            raw_b.agent_calls = await agent_records(env.agent_stats_url)
        assert env.database_url is not None
        agents = raw_b.agent_calls or None
        billing_b = await check_billing(env.database_url, results_b, agent_calls=agents)
        report_b = account(raw_b, billing_b)
        rows_a = await _dead_calls(env.database_url, results_a, killed_at, wait_s=_TTL_S + 10)
    result = _verdict(report_b, rows_a, reuse_s, per_gateway)
    _print(console, result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0 if result["ok"] else 1


def _target(env: Environment, n: int) -> Target:
    return Target(env.bases[n], env.setup, env.allowed)


async def set_limit(env: Environment, carrier: str, limit: int) -> None:
    from gateway.config import Settings, parse_master_keys
    from gateway.store.directory import Directory
    from gateway.store.secrets import load_keyring
    from gateway.store.sql.engine import create_engine

    if env.database_url is None or env.workdir is None:
        raise RuntimeError("kill-gateway needs spawned gateways")
    settings = Settings(
        data_dir=env.workdir,
        database_url=env.database_url,
        master_keys=parse_master_keys(env.master_key or ""),
    )
    engine = create_engine(env.database_url)
    try:
        directory = Directory(engine, load_keyring(settings))
        await directory.set_max_concurrent_calls(env.setup.carriers[carrier].tenant_id, limit)
    finally:
        await engine.dispose()


async def first_admission(
    env: Environment, carrier: str, gateway: int, since: float, within_s: float
) -> float | None:
    """Offer a short call to ``gateway`` every 0.25 s; seconds from ``since`` to admission."""
    audio = carrier_audio(carrier, load_fixture())
    deadline = since + within_s
    index = 10_000
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            index += 1
            plan = CallPlan(index, carrier, 0.0, 0.1)
            probe = await play_call(
                http, plan, env.setup.carriers[carrier], audio, public_url=env.bases[gateway]
            )
            if probe.answered:
                return time.monotonic() - since
            await asyncio.sleep(0.25)
    return None


async def _dead_calls(
    database_url: str, results: list[CallResult], killed_at: float, wait_s: float
) -> list[dict[str, Any]]:
    """The killed gateway's calls: what was sent before the kill, and their final CDR."""
    from gateway.errors import NotFoundError
    from gateway.store.ledger import Ledger
    from gateway.store.sql.engine import create_engine

    engine = create_engine(database_url)
    rows: list[dict[str, Any]] = []
    try:
        ledger = Ledger(engine)
        deadline = time.monotonic() + wait_s
        # Answered (media URL given), whatever happened to the socket when A died.
        for result in (r for r in results if r.answer_status == 200 and not r.refusal):
            call_id = call_id_for(result.plan.carrier, result.carrier_call_id)
            record = None
            while time.monotonic() < deadline:
                try:
                    record = await ledger.get_call(call_id)
                except NotFoundError:
                    record = None
                if record is not None and record.final:
                    break
                await asyncio.sleep(0.2)
            sent_ms = round(sum(1 for t in result.sent_at if t <= killed_at) * FRAME_S * 1000)
            rows.append(
                {
                    "call_id": call_id,
                    "sent_before_kill_ms": sent_ms,
                    "final": bool(record and record.final),
                    "status": str(record.status) if record else None,
                    "end_reason": record.end_reason if record else None,
                    "audio_ms": record.audio_ms if record else None,
                    "billable_units": record.billable_units if record else None,
                }
            )
    finally:
        await engine.dispose()
    return rows


def _verdict(
    report_b: dict[str, Any], rows_a: list[dict[str, Any]], reuse_s: float | None, n: int
) -> dict[str, Any]:
    frames = report_b["frames"]
    b_ok = (
        report_b["calls"]["completed"] == n
        and report_b["calls"]["failed"] == 0
        and frames.get("loss_ratio", 0) == 0
        and not any(frames.get(k, 0) for k in ("duplicated", "reordered"))
        and report_b["billing"].get("mismatched", 0) == 0
    )
    limit_s = _TTL_S + _RENEW_S + 1.0
    reuse_ok = reuse_s is not None and reuse_s <= limit_s
    checks = []
    for row in rows_a:
        audio, sent = row["audio_ms"], row["sent_before_kill_ms"]
        low = sent - (_CHECKPOINT_S + 1.0) * 1000
        units_ok = audio is not None and row["billable_units"] == math.ceil(audio / 30_000)
        checks.append(row["final"] and audio is not None and low <= audio <= sent and units_ok)
    a_ok = len(rows_a) == n and all(checks)
    return {
        "fault": "kill-gateway",
        "calls_per_gateway": n,
        "survivor": {"ok": b_ok, "report": report_b},
        "slot_reuse_s": None if reuse_s is None else round(reuse_s, 2),
        "slot_reuse_limit_s": limit_s,
        "slot_reuse_ok": reuse_ok,
        "killed_calls": rows_a,
        "killed_calls_ok": a_ok,
        "ok": b_ok and reuse_ok and a_ok,
    }


def _print(console: Console, result: dict[str, Any]) -> None:
    report = result["survivor"]["report"]
    console.print(
        f"gateway B's calls: {report['calls']['completed']}/{result['calls_per_gateway']} "
        f"completed, loss ratio {report['frames'].get('loss_ratio')}, billing mismatches "
        f"{report['billing'].get('mismatched', 0)} {mark(result['survivor']['ok'])}"
    )
    console.print(
        f"slots reusable {result['slot_reuse_s']} s after the kill "
        f"(limit {result['slot_reuse_limit_s']} s) {mark(result['slot_reuse_ok'])}"
    )
    for row in result["killed_calls"]:
        console.print(
            f"killed call {row['call_id'][:8]}: sent {row['sent_before_kill_ms']} ms before "
            f"the kill, billed {row['audio_ms']} ms = {row['billable_units']} unit(s), "
            f"{row['status']} / {row['end_reason']}"
        )
    console.print(
        f"gateway A's calls billed to their last checkpoint {mark(result['killed_calls_ok'])}"
    )
