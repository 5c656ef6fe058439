"""One load run: plan the calls, play them concurrently, watch the processes.

:func:`plan_calls` and :func:`parse_mix` are pure. :func:`run_load` plays the plan
against an :class:`~loadtest.environment.Environment` with a live progress line, samples
the gateway's (and the agent server's) CPU and RSS from ``/proc`` every 0.5 s, probes
``/healthz`` every 0.25 s (a cheap request whose latency is dominated by the gateway's
event-loop lag), fetches the agent server's per-call timing at the end, and returns a
:class:`RawRun` for :mod:`loadtest.report` to account.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from loadtest.agent_call import records_by_call
from loadtest.environment import Environment
from loadtest.host import HostSample, read_host, speed_probe_ms
from loadtest.player import CallPlan, CallResult
from loadtest.procs import ProcSample, read_proc, read_tree
from loadtest.schedule import ramp_starts
from loadtest.wire import WireCapture
from loadtest.wire_run import capture_steady, load_capture
from loadtest.workers import Target, play_plans, play_shard, worker_pool

__all__ = [
    "RawRun",
    "RunConfig",
    "agent_records",
    "parse_mix",
    "plan_calls",
    "run_load",
    "scrape",
    "watch_processes",
]


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What to play."""

    calls: int
    mix: dict[str, int]
    """Carrier → weight."""
    ramp: float = 20.0
    """Calls started per second (``inf``: all at once)."""
    hold_s: float = 10.0
    """Seconds every call keeps talking after the last one started (when no duration)."""
    durations: tuple[float, ...] = ()
    """Per-call talk time, cycled over the calls; empty: all end together after the hold."""
    deadline_s: float = 600.0
    """Hard limit on the whole run."""
    keep_audio: bool = True
    """Keep the heard audio for the content check (external probe agent)."""
    workers: int = 1
    """Tester processes sharing the calls (one Python process saturates near 100 calls)."""
    worker_cpus: frozenset[int] | None = None
    """CPUs of the tester's worker processes (``--tester-cpus``); None: inherited."""
    wire_s: float = 0.0
    """Seconds of the steady window to capture on loopback (``--wire``; 0: none)."""


@dataclass
class RawRun:
    """Everything a run observed, before accounting."""

    config: RunConfig
    results: list[CallResult]
    began: float
    ended: float
    ramp_end: float
    """When the last call was started (monotonic)."""
    gateway: list[ProcSample] = field(default_factory=list)
    agent: list[ProcSample] = field(default_factory=list)
    tester: list[ProcSample] = field(default_factory=list)
    """This process and its worker processes (not the gateway or agent server)."""
    host: list[HostSample] = field(default_factory=list)
    """The host's CPU counters (steal), sampled with the processes."""
    speed_probe_ms: tuple[float, float] | None = None
    """:func:`~loadtest.host.speed_probe_ms` before and after the calls."""
    metrics_scrapes: list[tuple[float, str]] = field(default_factory=list)
    """The gateway's ``/metrics`` when the planned steady window opened and closed."""
    run_scrapes: list[str] = field(default_factory=list)
    """The gateway's ``/metrics`` before the first call and after the last one ended."""
    probes_ms: list[float] = field(default_factory=list)
    probe_failures: int = 0
    agent_calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Agent server records by the gateway's call id."""
    deadline_hit: bool = False
    pacer_lead: int = 3
    """The gateway's pacer lead, frames (for the outbound service latency)."""
    wire: WireCapture | None = None
    """The loopback capture of the steady window (``--wire``)."""


def parse_mix(text: str) -> dict[str, int]:
    """``twilio=50,plivo=25,vonage=25`` → weights (a bare name weighs 1).

    Raises:
        ValueError: an unknown carrier, a weight that is not a positive integer, a carrier
            named twice, or nothing at all.
    """
    mix: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, weight = part.partition("=")
        name = name.strip().lower()
        if name not in ("twilio", "plivo", "vonage"):
            raise ValueError(f"--mix: expected twilio, plivo or vonage, got {name!r}")
        if name in mix:
            raise ValueError(f"--mix: {name} named twice")
        try:
            value = int(weight) if weight else 1
        except ValueError:
            raise ValueError(f"--mix: expected {name}=<positive integer>, got {part!r}") from None
        if value <= 0:
            raise ValueError(f"--mix: expected {name}=<positive integer>, got {part!r}")
        mix[name] = value
    if not mix:
        raise ValueError("--mix: expected at least one carrier")
    return mix


def plan_calls(config: RunConfig) -> list[CallPlan]:
    """The calls of a run: carriers interleaved by weight, start times by the ramp.

    Carrier ``c`` gets call ``i`` when it is the furthest behind its share
    ``weight / total * (i + 1)`` (ties: mix order), so every prefix of the ramp carries
    the mix, not one carrier after another.
    """
    if config.calls < 1:
        raise ValueError(f"expected at least 1 call, got {config.calls}")
    starts = ramp_starts(config.calls, config.ramp)
    ramp_end = starts[-1]
    total = sum(config.mix.values())
    assigned = dict.fromkeys(config.mix, 0)
    plans: list[CallPlan] = []
    for i, start in enumerate(starts):
        carrier = max(config.mix, key=lambda c: config.mix[c] * (i + 1) / total - assigned[c])
        assigned[carrier] += 1
        if config.durations:
            duration = config.durations[i % len(config.durations)]
        else:
            duration = ramp_end - start + config.hold_s
        plans.append(CallPlan(i, carrier, start, max(duration, 0.02)))
    return plans


async def run_load(
    env: Environment,
    config: RunConfig,
    *,
    progress: Callable[[str], None] | None = None,
) -> RawRun:
    """Play ``config`` against ``env``; bounded by ``config.deadline_s``."""
    plans = plan_calls(config)
    results: list[CallResult] = []
    stop = asyncio.Event()
    speed_before = speed_probe_ms()
    began = time.monotonic()
    raw = RawRun(config, results, began, began, began + plans[-1].start_s)
    raw.pacer_lead = env.pacer_lead
    target = Target(env.public_url, env.setup, env.allowed)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        watcher = asyncio.create_task(watch_processes(http, env, raw, stop))
        shown = asyncio.create_task(_progress(raw, plans, stop, progress)) if progress else None
        first = await scrape(http, env)
        origin = time.monotonic() + 0.2  # every worker starts the ramp at the same instant
        window = steady_plan(plans, origin)
        scrapes = asyncio.create_task(scrape_steady(http, env, raw, window))
        wire = None
        if config.wire_s > 0 and window is not None:
            wire = asyncio.create_task(capture_steady(window, config.wire_s, env.workdir))
        try:
            async with asyncio.timeout(config.deadline_s + 20):
                if config.workers > 1:
                    results.extend(await _in_workers(target, config, plans, origin))
                else:
                    results.extend(await play_plans(target, config, plans, origin))
        except TimeoutError:
            raw.deadline_hit = True
        finally:
            stop.set()
            scrapes.cancel()
            await asyncio.gather(
                watcher, scrapes, *([shown] if shown else []), return_exceptions=True
            )
        raw.ended = time.monotonic()
        if first is not None and (last := await scrape(http, env)) is not None:
            raw.run_scrapes = [first, last]
        raw.deadline_hit = raw.deadline_hit or raw.ended - began > config.deadline_s
        if wire is not None:
            path, counts = await wire  # (it ended with the window) CaptureFailed: raised
            raw.wire = load_capture(path, counts)
            if env.workdir is None:  # a temporary folder of its own (--target): not kept
                shutil.rmtree(path.parent, ignore_errors=True)
        raw.speed_probe_ms = (speed_before, speed_probe_ms())
        if env.agent_stats_url:
            raw.agent_calls = await agent_records(env.agent_stats_url, http)
    return raw


async def _in_workers(
    target: Target, config: RunConfig, plans: Sequence[CallPlan], origin: float
) -> list[CallResult]:
    """Shard the calls over ``config.workers`` processes (call ``i`` to worker ``i % n``)."""
    shards = [list(plans[w :: config.workers]) for w in range(config.workers)]
    loop = asyncio.get_running_loop()
    with worker_pool(config.workers, config.worker_cpus) as pool:
        futures = [
            loop.run_in_executor(pool, play_shard, target, config, shard, origin)
            for shard in shards
            if shard
        ]
        done = await asyncio.gather(*futures)
    return [result for shard in done for result in shard]


def steady_plan(plans: Sequence[CallPlan], origin: float) -> tuple[float, float] | None:
    """When every planned call is up: 1 s after the last start to 0.5 s before the first end.

    None when that is shorter than a second (the report's steady window, as planned).
    """
    start = origin + max(p.start_s for p in plans) + 1.0
    end = origin + min(p.start_s + p.duration_s for p in plans) - 0.5
    return (start, end) if end - start >= 1.0 else None


async def scrape_steady(
    http: aiohttp.ClientSession,
    env: Environment,
    raw: RawRun,
    window: tuple[float, float] | None,
) -> None:
    """Read the gateway's ``/metrics`` as the steady window opens and as it closes.

    A scrape that fails (a ``--target`` gateway that does not serve ``/metrics`` to the
    tester) leaves the report without the gateway's view; the run goes on.
    """
    if window is None:
        return
    for at in window:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        text = await scrape(http, env)
        if text is None:
            return
        raw.metrics_scrapes.append((time.monotonic(), text))


async def scrape(http: aiohttp.ClientSession, env: Environment) -> str | None:
    """The gateway's ``/metrics`` now; None when it could not be read."""
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with http.get(f"{env.base_url}/metrics", timeout=timeout) as response:
            return await response.text() if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def watch_processes(
    http: aiohttp.ClientSession, env: Environment, raw: RawRun, stop: asyncio.Event
) -> None:
    """Sample /proc (processes, host) every 0.5 s and probe /healthz every 0.25 s."""
    tick = 0
    timeout = aiohttp.ClientTimeout(total=2)
    while not stop.is_set():
        if tick % 2 == 0:
            for pid, series in ((env.gateway_pid, raw.gateway), (env.agent_pid, raw.agent)):
                sample = read_proc(pid) if pid else None
                if sample is not None:
                    series.append(sample)
            mine = read_tree(os.getpid(), exclude={env.gateway_pid, env.agent_pid})
            if mine is not None:
                raw.tester.append(mine)
            host = read_host()
            if host is not None:
                raw.host.append(host)
        began = time.monotonic()
        try:
            async with http.get(f"{env.base_url}/healthz", timeout=timeout) as response:
                await response.read()
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        if ok:
            raw.probes_ms.append((time.monotonic() - began) * 1000)
        else:
            raw.probe_failures += 1
        tick += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def _progress(
    raw: RawRun, plans: Sequence[CallPlan], stop: asyncio.Event, show: Callable[[str], None]
) -> None:
    while not stop.is_set():
        results = raw.results
        cpu = ""
        if len(raw.gateway) >= 2:
            a, b = raw.gateway[-2], raw.gateway[-1]
            cpu = f"  gateway CPU {100 * (b.cpu_s - a.cpu_s) / max(b.at - a.at, 1e-6):.0f}%"
            cpu += f"  RSS {b.rss_bytes / 2**20:.0f} MB"
        elapsed = time.monotonic() - raw.began
        started = sum(1 for p in plans if p.start_s <= elapsed)
        done = len(results)
        refused = sum(1 for r in results if r.refusal)
        failed = sum(1 for r in results if r.error)
        lag = f"  probe {raw.probes_ms[-1]:.1f} ms" if raw.probes_ms else ""
        show(
            f"{elapsed:6.1f}s  calls {started - done}/{len(plans)} live, {done} ended,"
            f" {refused} refused, {failed} failed{cpu}{lag}"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def agent_records(
    url: str, http: aiohttp.ClientSession | None = None
) -> dict[str, dict[str, Any]]:
    """The agent server's per-call records (``/stats``), by call id; {} if unreachable."""
    if http is None:
        async with aiohttp.ClientSession() as session:
            return await agent_records(url, session)
    for _ in range(20):  # the gateway's ending sequence closes agent legs just after ours
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
                stats = msgspec.json.decode(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}
        if stats.get("active", 0) == 0:
            break
        await asyncio.sleep(0.25)
    return records_by_call(stats)
