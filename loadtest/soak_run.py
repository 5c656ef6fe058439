"""Play a soak (:mod:`loadtest.soak`) and account it as it goes.

The calls are played by tester worker processes (``--workers``, at least one), never by
this process: this one samples ``/proc`` and probes ``/healthz`` (as in a run) and
accounts the calls in batches while they play, so the accounting does not disturb the
callers' pacing and nothing holds an hour of frame times.

* Workers stream each :class:`~loadtest.player.CallResult` back as its call ends
  (:func:`~loadtest.workers.play_shard` with a queue).
* Every ``batch_s`` seconds, the results received are accounted with the run's own
  :func:`~loadtest.report.account` and billing check (each call's CDR against what it
  sent) and added to a :class:`~loadtest.soak.Tally`; the results are then dropped.
* With an external agent, the agent server's per-call timing is taken (``GET
  /stats/take``: it forgets what it returned) and matched by call id; a call whose
  record has not arrived yet (the gateway closes the agent leg just after the caller
  hangs up) waits for the next batch, for up to :data:`_RECORD_GRACE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import msgspec

from gateway.server.answer import call_id_for
from loadtest.agent_call import records_by_call
from loadtest.environment import Environment
from loadtest.host import host_figures, speed_probe_ms, steal_series
from loadtest.player import CallPlan, CallResult
from loadtest.report import (
    SCHEMA,
    account,
    check_billing,
    gateway_answers,
    machine,
    process_figures,
)
from loadtest.run import RawRun, RunConfig, scrape, watch_processes
from loadtest.soak import (
    END_SAMPLES,
    WARMUP_RULE,
    Tally,
    downsample,
    plan_soak,
    rss_drift,
    warmup_for,
)
from loadtest.stats import summarize
from loadtest.workers import ShardDone, Target, play_shard, worker_pool

__all__ = ["SoakConfig", "run_soak"]

_RECORD_GRACE_S = 5.0
_SLACK_S = 60.0  # beyond the duration: the last hang-ups, billing, stragglers


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """What to soak."""

    calls: int
    """Calls live at every moment."""
    mix: dict[str, int]
    duration_s: float = 3600.0
    call_s: float = 60.0
    """How long each call talks before it hangs up and its slot dials the next."""
    warmup_s: float | None = None
    """None: :func:`~loadtest.soak.warmup_for` the duration."""
    ramp: float = 20.0
    workers: int = 1
    worker_cpus: frozenset[int] | None = None
    batch_s: float = 30.0
    """How often the calls ended so far are accounted."""
    deadline_s: float | None = None
    """Hard limit on the calls (None: the duration + 60 s)."""

    @property
    def warmup(self) -> float:
        """The warm-up in seconds (given, or by the rule)."""
        return warmup_for(self.duration_s) if self.warmup_s is None else self.warmup_s


async def run_soak(
    env: Environment, config: SoakConfig, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Play ``config`` against ``env``; the report (run report shape + ``soak``)."""
    plans = plan_soak(config.calls, config.mix, config.duration_s, config.call_s, config.ramp)
    run_config = RunConfig(
        calls=len(plans),
        mix=config.mix,
        ramp=config.ramp,
        hold_s=0.0,
        deadline_s=config.deadline_s or config.duration_s + _SLACK_S,
        keep_audio=env.agent_stats_url is not None,  # the content check needs the agent
        workers=config.workers,
        worker_cpus=config.worker_cpus,
    )
    speed_before = speed_probe_ms()
    origin = time.monotonic() + 0.5  # the workers' start-up
    raw = RawRun(run_config, [], origin, origin, origin + plans[-1].start_s)
    raw.pacer_lead = env.pacer_lead
    tally = Tally()
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        accountant = _Accountant(env, http, raw, tally, config.batch_s)
        first = await scrape(http, env)  # for the gateway's answer times
        watcher = asyncio.create_task(watch_processes(http, env, raw, stop))
        try:
            async with asyncio.timeout(run_config.deadline_s + _SLACK_S):
                await _play(env, run_config, plans, origin, accountant, progress)
        except TimeoutError:
            raw.deadline_hit = True
        finally:
            stop.set()
            await asyncio.gather(watcher, return_exceptions=True)
        raw.ended = time.monotonic()
        if first is not None and (last := await scrape(http, env)) is not None:
            raw.run_scrapes = [first, last]
        raw.deadline_hit = raw.deadline_hit or raw.ended - origin > run_config.deadline_s
        raw.speed_probe_ms = (speed_before, speed_probe_ms())
        try:
            await accountant.settle(final=True)
        finally:
            accountant.close()
    return _report(config, plans, raw, tally, origin)


async def _play(
    env: Environment,
    config: RunConfig,
    plans: Sequence[CallPlan],
    origin: float,
    accountant: _Accountant,
    progress: Callable[[str], None] | None,
) -> None:
    """Play the shards in worker processes, accounting every ``batch_s``."""
    shards = [list(plans[w :: config.workers]) for w in range(config.workers)]
    shards = [s for s in shards if s]
    target = Target(env.public_url, env.setup, env.allowed)
    sink = multiprocessing.get_context("spawn").Queue()
    loop = asyncio.get_running_loop()
    with worker_pool(config.workers, config.worker_cpus, sink) as pool:
        futures = [
            loop.run_in_executor(pool, play_shard, target, config, shard, origin, n)
            for n, shard in enumerate(shards)
        ]
        done = 0
        next_batch = time.monotonic() + accountant.batch_s
        while done < len(shards):
            item = await loop.run_in_executor(None, _get, sink, 0.25)
            if isinstance(item, ShardDone):
                done += 1
            elif item is not None:
                accountant.pending.append(item)
            for future in futures:
                if future.done() and not future.cancelled() and future.exception() is not None:
                    raise RuntimeError(f"a tester worker failed: {future.exception()!r}")
            if time.monotonic() >= next_batch:
                await accountant.settle()
                next_batch = time.monotonic() + accountant.batch_s
            if progress is not None:
                progress(_progress_line(accountant, len(plans), origin))
        await asyncio.gather(*futures)
    sink.close()


def _get(sink: Any, timeout: float) -> Any:
    """The next item of ``sink``, or None after ``timeout`` (in a thread)."""
    try:
        return sink.get(timeout=timeout)
    except queue.Empty:
        return None


def _progress_line(accountant: _Accountant, planned: int, origin: float) -> str:
    raw, tally = accountant.raw, accountant.tally
    ended = tally.calls["played"] + len(accountant.pending)
    rss = f"  gateway RSS {raw.gateway[-1].rss_bytes / 2**20:.1f} MB" if raw.gateway else ""
    return (
        f"{time.monotonic() - origin:7.1f}s  calls {ended}/{planned} ended, "
        f"{tally.calls['failed']} failed, {sum(tally.refused.values())} refused{rss}"
    )


class _Accountant:
    """Accounts the results received so far, batch by batch, into a :class:`Tally`."""

    def __init__(
        self,
        env: Environment,
        http: aiohttp.ClientSession,
        raw: RawRun,
        tally: Tally,
        batch_s: float,
    ) -> None:
        self.env, self.http, self.raw, self.tally = env, http, raw, tally
        self.batch_s = batch_s
        self.pending: list[CallResult] = []
        self.records: dict[str, dict[str, Any]] = {}
        self._executor = ThreadPoolExecutor(1, "soak-accounting", initializer=_low_priority)

    def close(self) -> None:
        """Stop the accounting thread (after the last :meth:`settle`)."""
        self._executor.shutdown(wait=True)

    async def settle(self, *, final: bool = False) -> None:
        """Account every pending call that is ready (``final``: all of them)."""
        await self._take_records(final)
        now = time.monotonic()
        ready: list[CallResult] = []
        waiting: list[CallResult] = []
        for result in self.pending:
            late = now - (result.ended_at or now) > _RECORD_GRACE_S
            if final or late or not self._awaits_record(result):
                ready.append(result)
            else:
                waiting.append(result)
        self.pending = waiting
        if ready:
            self.tally.add(await self._account(ready))

    def _awaits_record(self, result: CallResult) -> bool:
        if self.env.agent_stats_url is None or not result.answered:
            return False
        return _call_id(result) not in self.records

    async def _take_records(self, final: bool) -> None:
        """Take the agent server's records; ``final``: until no call is active."""
        if self.env.agent_stats_url is None:
            return
        url = self.env.agent_stats_url + "/take"
        timeout = aiohttp.ClientTimeout(total=30)
        for _ in range(20 if final else 1):
            more = True
            while more:  # a few records per request: the agent server's loop turns between
                try:
                    async with self.http.get(url, timeout=timeout) as response:
                        stats = msgspec.json.decode(await response.read())
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    return
                self.records.update(records_by_call(stats))
                more = bool(stats.get("more"))
            if stats.get("active", 0) == 0:
                return
            await asyncio.sleep(0.25)

    async def _account(self, ready: list[CallResult]) -> dict[str, Any]:
        env = self.env
        billing = []
        if env.database_url:
            agents = self.records or None  # empty: no agent server (or no record yet)
            billing = await check_billing(env.database_url, ready, agent_calls=agents)
        batch = RawRun(
            replace(self.raw.config, calls=len(ready)),
            ready,
            self.raw.began,
            time.monotonic(),
            self.raw.ramp_end,
        )
        batch.pacer_lead = self.raw.pacer_lead
        for result in ready:
            record = self.records.pop(_call_id(result), None)
            if record is not None:
                batch.agent_calls[_call_id(result)] = record
        # Off the event loop (/proc sampling and the /healthz probe go on meanwhile), in a
        # thread of lower priority: see _low_priority.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, account, batch, billing)


def _low_priority() -> None:
    """Run this thread at nice +10 (on Linux ``nice`` applies to the calling thread).

    A batch (matching every frame, the content check) takes seconds of CPU every
    ``batch_s`` on the core the tester workers and the agent server share; at full
    priority it starved the agent server enough, at 140 calls, to miss the gateway's 5 s
    connect and 2 s close timeouts. The calls being measured come first.
    """
    with contextlib.suppress(OSError):
        os.nice(10)


def _call_id(result: CallResult) -> str:
    return call_id_for(result.plan.carrier, result.carrier_call_id)


def _report(
    config: SoakConfig, plans: Sequence[CallPlan], raw: RawRun, tally: Tally, origin: float
) -> dict[str, Any]:
    """The soak's report: a run report's sections over all batches, and ``soak``."""
    end = origin + config.duration_s
    window = (origin + config.warmup, end)
    return {
        "schema": SCHEMA,
        "command": "soak",
        "config": {
            "calls": config.calls,
            "mix": config.mix,
            "duration_s": config.duration_s,
            "call_s": config.call_s,
            "warmup_s": config.warmup,
            "ramp_per_s": config.ramp,
            "workers": config.workers,
            "batch_s": config.batch_s,
        },
        "duration_s": round(raw.ended - raw.began, 2),
        "deadline_hit": raw.deadline_hit,
        "calls": tally.calls_json(len(plans)) | {"concurrent": config.calls},
        "frames": tally.frames_json(),
        "latency_ms": tally.latency_json() | {"healthz_probe": summarize(raw.probes_ms).as_dict()},
        "healthz_failures": raw.probe_failures,
        "gateway": process_figures(raw.gateway, window, config.calls),
        "agent_server": process_figures(raw.agent, window, config.calls) if raw.agent else None,
        "tester": process_figures(raw.tester, window, config.calls),
        "host": host_figures(raw.host, window) | {"speed_probe_ms": raw.speed_probe_ms},
        "per_carrier": tally.per_carrier_json(),
        "billing": tally.billing_json(),
        "machine": machine(),
        "per_call": tally.per_call,
        "soak": _soak_section(config, raw, origin),
        "gateway_answers": gateway_answers(raw),
    }


def _soak_section(config: SoakConfig, raw: RawRun, origin: float) -> dict[str, Any]:
    samples = [(s.at - origin, s.rss_bytes) for s in raw.gateway]
    drift = rss_drift(samples, config.warmup, config.duration_s)
    section: dict[str, Any] = {
        "calls": config.calls,
        "duration_s": config.duration_s,
        "call_s": config.call_s,
        "warmup_s": config.warmup,
        "warmup_rule": "--warmup" if config.warmup_s is not None else WARMUP_RULE,
        "end_samples": END_SAMPLES,
        "samples_taken": len(samples),
        "rss_mb_baseline": None,
        "rss_mb_end": None,
        "baseline_window_s": None,
        "end_window_s": None,
        "rss_drift": None,
        "samples": [[round(t, 2), round(rss / 2**20, 2)] for t, rss in downsample(samples)],
        "host_steal_by_minute": steal_series(raw.host, origin),
    }
    if drift is not None:
        section |= {
            "rss_mb_baseline": round(drift.baseline_bytes / 2**20, 2),
            "rss_mb_end": round(drift.end_bytes / 2**20, 2),
            "baseline_window_s": [round(t, 2) for t in drift.baseline_window_s],
            "end_window_s": [round(t, 2) for t in drift.end_window_s],
            "rss_drift": round(drift.ratio, 5),
        }
    return section
