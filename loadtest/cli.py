"""``rymi-loadtest``: synthetic carrier calls against a gateway, capacity, faults.

Commands (``rymi-loadtest --help``; docs/loadtest.md has the walkthrough):

* ``run`` (the default): N calls by carrier mix, ramp and hold; the table, ``--json``,
  ``--plot``; exit 1 when an objective (``--max-p99-ms``, ``--max-loss``, ...) is missed.
* ``capacity``: ``run`` at rising concurrency until a level is not clean.
* ``soak``: a constant number of calls, recycled, for ``--duration`` (an hour); the
  gateway's RSS drift after warm-up, loss and every call's billing; exit 1 when missed.
* ``fault malformed``: malformed frames on side sockets next to healthy calls.
* ``fault kill-gateway`` / ``fault restart-redis``: two gateways on one Redis; SIGKILL
  one gateway, or restart Redis empty, in the middle of load.
* ``seed``: create the load tester's tenants in a gateway's database (for ``--target``).

``run``, ``capacity`` and ``soak`` take ``--gateway-cpus``, ``--agent-cpus`` and
``--tester-cpus`` (CPU lists, :mod:`loadtest.affinity`).

Exit codes: 0 met, 1 an objective missed (or a fault run failed), 2 invalid usage or an
unsafe target, 3 the run could not be made (gateway did not start, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["main"]

_OBJECTIVES = (
    ("--max-p99-ms", "max_p99_ms", "gateway-added p99, each leg (external agent), ms"),
    ("--max-queue-p99-ms", "max_queue_p99_ms", "agent→carrier p99 with the playout queue"),
    ("--max-loss", "max_loss", "frames lost / frames sent (0 = none)"),
    ("--max-misordered", "max_misordered", "frames duplicated or reordered"),
    ("--max-refusals", "max_refusals", "calls refused"),
    ("--max-failed", "max_failed", "calls failed"),
    ("--max-answer-p99-ms", "max_answer_p99_ms", "answer latency p99, ms"),
    ("--max-jitter-p99-ms", "max_jitter_p99_ms", "outbound pacing jitter p99, ms"),
    ("--max-billing-mismatches", "max_billing_mismatches", "CDRs billed other units"),
)
# A soak is about what goes wrong rarely: by default nothing may.
_SOAK_LIMITS = {
    "max_loss": 0.0,
    "max_misordered": 0.0,
    "max_refusals": 0.0,
    "max_failed": 0.0,
    "max_billing_mismatches": 0.0,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rymi-loadtest", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="play N calls (default command)")
    _common(run)
    _pinning(run)
    _load(run)
    for flag, dest, text in _OBJECTIVES:
        run.add_argument(flag, dest=dest, type=float, default=None, help=text)
    run.add_argument("--plot", type=Path, help="PNG of gateway CPU over the run (matplotlib)")

    cap = sub.add_parser("capacity", help="step concurrency up until a level is not clean")
    _common(cap)
    _pinning(cap)
    _load(cap)
    cap.add_argument("--levels", default="25,50,100,150,200", help="comma-separated call counts")
    cap.add_argument("--max-p99-ms", type=float, default=10.0)
    cap.add_argument("--max-jitter-p99-ms", type=float, default=10.0)
    cap.add_argument("--max-probe-p99-ms", type=float, default=50.0, help="loop-lag proxy")
    cap.add_argument("--plot", type=Path, help="PNG of latency and CPU against concurrency")
    cap.add_argument("--all-levels", action="store_true", help="go on after a level fails")

    _soak_parser(sub)

    fault = sub.add_parser("fault", help="scripted fault runs")
    fault.add_argument("kind", choices=["malformed", "kill-gateway", "restart-redis"])
    _common(fault)
    fault.add_argument("--healthy", type=int, default=10, help="healthy calls alongside")
    fault.add_argument("--bad", type=int, default=1000, help="malformed messages to send")
    fault.add_argument("--mix", default="twilio=1,plivo=1,vonage=1")
    fault.add_argument("--hold", type=float, default=8.0)
    fault.add_argument(
        "--kill-after", type=float, default=3.0, help="s into the hold: kill the gateway / Redis"
    )
    fault.add_argument("--redis-url", help="kill-gateway: Redis (default: a private one)")

    seed = sub.add_parser("seed", help="create the load tester's tenants (RYMI_* database)")
    seed.add_argument("--mix", default="twilio,plivo,vonage")
    seed.add_argument("--agent-url", default="echo", help="echo, or ws://HOST:PORT/agents")
    seed.add_argument("--agent-secret", default=os.environ.get("RYMI_LOADTEST_AGENT_SECRET"))
    seed.add_argument("--out", type=Path, required=True, help="setup JSON to write (0600)")
    return parser


def _common(cmd: argparse.ArgumentParser) -> None:
    where = cmd.add_mutually_exclusive_group()
    where.add_argument("--spawn", action="store_true", help="start a gateway (the default)")
    where.add_argument("--target", help="base URL of a running gateway (loopback unless allowed)")
    cmd.add_argument("--allow-target", action="append", default=[], metavar="HOST")
    cmd.add_argument("--setup", type=Path, help="tenants of a --target (rymi-loadtest seed)")
    cmd.add_argument("--pid", type=int, help="a --target gateway's pid, for CPU and RSS")
    cmd.add_argument("--database-url", help="a --target gateway's database, for billing checks")
    cmd.add_argument("--agent-stats", help="a --target's agent server /stats URL (--timing)")
    cmd.add_argument("--agent", choices=["builtin-echo", "external"], default="builtin-echo")
    cmd.add_argument("--agent-mode", choices=["probe", "echo", "pattern"], default="probe")
    cmd.add_argument("--gateway-env", action="append", default=[], metavar="RYMI_X=V")
    cmd.add_argument(
        "--deadline", type=float, help="hard limit, seconds (600; soak: --duration + 60)"
    )
    cmd.add_argument("--json", type=Path, help="write the report here")
    cmd.add_argument("--workdir", type=Path, help="spawned gateway's directory (kept)")
    cmd.add_argument("--keep", action="store_true", help="keep the temp directory")
    cmd.add_argument("--quiet", action="store_true", help="no live progress line")


def _pinning(cmd: argparse.ArgumentParser) -> None:
    for flag, what in (
        ("--gateway-cpus", "the spawned gateway"),
        ("--agent-cpus", "the spawned agent server (--agent external)"),
        ("--tester-cpus", "the tester and its worker processes"),
    ):
        cmd.add_argument(flag, metavar="CPUS", help=f"run {what} on these CPUs: 0, 0,1 or 1-3")


def _soak_parser(sub: Any) -> None:
    soak = sub.add_parser("soak", help="constant calls for a long time: RSS drift, loss, billing")
    _common(soak)
    _pinning(soak)
    count = soak.add_mutually_exclusive_group()
    count.add_argument("--calls", type=int, default=10, help="calls live at every moment")
    count.add_argument(
        "--capacity-json", type=Path, help="a `capacity --json` report: --fraction of its best"
    )
    soak.add_argument("--fraction", type=float, default=0.7, help="of the highest clean level")
    soak.add_argument("--duration", type=float, default=3600.0, help="seconds")
    soak.add_argument("--call-seconds", type=float, default=60.0, help="each call's length")
    soak.add_argument(
        "--warmup", type=float, help="seconds before the RSS baseline (10%%, >= 30 s, <= half)"
    )
    soak.add_argument("--mix", default="twilio=1")
    soak.add_argument("--ramp", type=float, default=20.0, help="calls started per second")
    soak.add_argument("--workers", type=int, default=1, help="tester processes playing calls")
    soak.add_argument("--batch-seconds", type=float, default=30.0, help="account this often")
    soak.add_argument("--max-rss-drift", type=float, default=0.05, help="(end - base) / base")
    for flag, dest, text in _OBJECTIVES:
        soak.add_argument(flag, dest=dest, type=float, default=_SOAK_LIMITS.get(dest), help=text)


def _load(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--calls", type=int, default=10)
    cmd.add_argument("--mix", default="twilio=1")
    cmd.add_argument("--ramp", type=float, default=20.0, help="calls started per second")
    cmd.add_argument("--hold", type=float, default=10.0, help="seconds all calls stay up")
    cmd.add_argument("--durations", default="", help="per-call seconds, cycled (e.g. 5,10)")
    cmd.add_argument(
        "--workers", type=int, default=1, help="tester processes (one saturates near 100 calls)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rymi-loadtest`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "run")
    parser = _parser()
    args = parser.parse_args(args_list)
    # A fixed width off a terminal, so tables in logs and CI output stay readable.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    from loadtest.safety import UnsafeTarget

    try:
        if args.command == "seed":
            return asyncio.run(_seed(args, console))
        if args.command == "fault" and args.kind == "restart-redis":
            from loadtest.fault_redis import run_restart_redis

            return asyncio.run(run_restart_redis(args, _env_options(args), console))
        if args.command == "fault" and args.kind == "kill-gateway":
            from loadtest.fault_kill import run_kill_gateway

            options = _env_options(args)
            if args.redis_url:
                options = dataclasses.replace(options, redis_url=args.redis_url)
            return asyncio.run(run_kill_gateway(args, options, console))
        if args.command == "fault":
            from loadtest.fault import run_fault

            return asyncio.run(run_fault(args, _env_options(args), console))
        command = {"run": _run, "capacity": _capacity, "soak": _soak}[args.command]
        with _pinned(args) as pinning:
            return asyncio.run(command(args, pinning, console))
    except (UnsafeTarget, ValueError) as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        return 2
    except RuntimeError as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        return 3
    except KeyboardInterrupt:
        return 130


@contextlib.contextmanager
def _pinned(args: argparse.Namespace) -> Iterator[Any]:
    """The CPU options parsed and checked; the tester pinned for the block, then restored.

    Called before the event loop and any thread exist: ``sched_setaffinity(0)`` sets the
    calling thread's mask, and threads and processes started later inherit it.
    """
    from loadtest.affinity import Pinning, thread_pinned

    pinning = Pinning.from_options(
        os.sched_getaffinity(0),
        gateway=args.gateway_cpus,
        agent=args.agent_cpus,
        tester=args.tester_cpus,
    )
    pinning.check(spawned=not args.target, agent_server=args.agent == "external")
    with thread_pinned(pinning.tester):
        yield pinning


def _affinity(pinning: Any, env: Any) -> dict[str, Any]:
    """What was asked and what each process has, for the report's ``machine``."""
    return dict(pinning.report(gateway=env.gateway_pid, agent_server=env.agent_pid))


def _env_options(args: argparse.Namespace, pinning: Any = None) -> Any:
    from loadtest.environment import EnvOptions
    from loadtest.run import parse_mix
    from loadtest.safety import check_target

    if args.target:
        check_target(args.target, args.allow_target)
    pairs = []
    for item in args.gateway_env:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--gateway-env: expected RYMI_NAME=VALUE, got {item!r}")
        pairs.append((name, value))
    return EnvOptions(
        carriers=tuple(parse_mix(args.mix)),
        target=args.target,
        setup_file=args.setup,
        allowed=tuple(args.allow_target),
        pid=args.pid,
        database_url=args.database_url,
        agent_stats_url=args.agent_stats,
        agent=args.agent,
        agent_mode=args.agent_mode,
        gateway_env=tuple(pairs),
        workdir=args.workdir,
        keep=args.keep,
        gateway_cpus=pinning.for_child(pinning.gateway) if pinning else None,
        agent_cpus=pinning.for_child(pinning.agent) if pinning else None,
    )


def _run_config(args: argparse.Namespace, pinning: Any, calls: int | None = None) -> Any:
    from loadtest.run import RunConfig, parse_mix

    durations = tuple(float(d) for d in args.durations.split(",") if d.strip())
    if any(not d > 0 for d in durations):
        raise ValueError("--durations: expected seconds > 0")
    deadline = 600.0 if args.deadline is None else args.deadline
    if args.calls < 1 or not args.ramp > 0 or args.hold < 0 or not deadline > 0:
        raise ValueError("expected --calls >= 1, --ramp > 0, --hold >= 0, --deadline > 0")
    if not 1 <= args.workers <= 64:
        raise ValueError("expected --workers 1-64")
    return RunConfig(
        calls=calls or args.calls,
        mix=parse_mix(args.mix),
        ramp=math.inf if math.isinf(args.ramp) else args.ramp,
        hold_s=args.hold,
        durations=durations,
        deadline_s=deadline,
        workers=args.workers,
        worker_cpus=pinning.tester,
    )


def _progress(args: argparse.Namespace, console: Console) -> Any:
    if args.quiet or not console.is_terminal:
        return None, None
    from rich.live import Live
    from rich.text import Text

    live = Live(Text(""), console=console, refresh_per_second=4, transient=True)

    def show(line: str) -> None:
        live.update(Text(line))

    return live, show


async def _run(args: argparse.Namespace, pinning: Any, console: Console) -> int:
    from loadtest.environment import environment
    from loadtest.render import print_report
    from loadtest.report import account, check_billing, objectives
    from loadtest.run import run_load

    config = _run_config(args, pinning)
    options = _env_options(args, pinning)
    live, show = _progress(args, console)
    async with environment(options) as env:
        affinity = _affinity(pinning, env)
        if live is not None:
            live.start()
        try:
            raw = await run_load(env, config, progress=show)
        finally:
            if live is not None:
                live.stop()
        billing = await check_billing(env.database_url, raw.results) if env.database_url else []
        report = account(raw, billing)
    report["machine"]["affinity"] = affinity
    limits = {dest: getattr(args, dest) for _, dest, _ in _OBJECTIVES}
    checks = objectives(report, limits)
    report["objectives"] = [
        {"name": c.name, "limit": c.limit, "value": c.value, "ok": c.ok} for c in checks
    ]
    report["ok"] = all(c.ok for c in checks)
    print_report(console, report, checks)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    if args.plot:
        _plot_run(args.plot, raw)
    return 0 if report["ok"] else 1


def _plot_run(path: Path, raw: Any) -> None:
    from loadtest.render import plot_levels

    samples = raw.gateway
    levels = []
    live = 0
    for a, b in itertools.pairwise(samples):
        live = sum(
            1 for r in raw.results if r.opened_at and r.opened_at <= b.at <= (r.ended_at or 1e18)
        )
        cpu = 100 * (b.cpu_s - a.cpu_s) / max(b.at - a.at, 1e-6)
        levels.append(
            {
                "calls": live,
                "cpu_percent": cpu,
                "inbound_p99_ms": None,
                "outbound_p99_ms": None,
                "jitter_p99_ms": None,
            }
        )
    plot_levels(path, levels, "gateway CPU against live calls during the run")


async def _capacity(args: argparse.Namespace, pinning: Any, console: Console) -> int:
    from loadtest.capacity import Limits, search
    from loadtest.environment import environment
    from loadtest.render import plot_levels, print_levels

    try:
        levels = [int(v) for v in args.levels.split(",") if v.strip()]
    except ValueError:
        raise ValueError("--levels: expected comma-separated integers") from None
    if not levels or any(v < 1 for v in levels):
        raise ValueError("--levels: expected call counts >= 1")
    limits = Limits(args.max_p99_ms, args.max_jitter_p99_ms, args.max_probe_p99_ms)
    base = _run_config(args, pinning, calls=levels[0])
    live, show = _progress(args, console)

    def on_level(level: dict[str, Any], report: dict[str, Any]) -> None:
        state = "clean" if level["clean"] else "NOT clean: " + ", ".join(level["reasons"])
        console.print(f"{level['calls']} calls: {state}")

    async with environment(_env_options(args, pinning)) as env:
        affinity = _affinity(pinning, env)
        if live is not None:
            live.start()
        try:
            result = await search(
                env,
                levels,
                base,
                limits,
                progress=show,
                on_level=on_level,
                all_levels=args.all_levels,
            )
        finally:
            if live is not None:
                live.stop()
    from loadtest.report import machine

    result["machine"] = machine() | {"affinity": affinity}
    result["agent"] = args.agent
    result["mix"] = base.mix
    print_levels(console, result["levels"])
    console.print(f"highest clean level: {result['highest_clean']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if args.plot:
        plot_levels(args.plot, result["levels"], f"capacity ({args.agent}, {args.mix})")
    return 0 if result["highest_clean"] is not None else 1


async def _soak(args: argparse.Namespace, pinning: Any, console: Console) -> int:
    from loadtest.environment import environment
    from loadtest.render import print_report, print_soak
    from loadtest.soak import soak_objectives
    from loadtest.soak_run import run_soak

    config = _soak_config(args, pinning)
    if args.target and (args.pid is None or args.database_url is None):
        raise ValueError("soak --target needs --pid (RSS drift) and --database-url (billing)")
    live, show = _progress(args, console)
    async with environment(_env_options(args, pinning)) as env:
        affinity = _affinity(pinning, env)
        if live is not None:
            live.start()
        try:
            report = await run_soak(env, config, progress=show)
        finally:
            if live is not None:
                live.stop()
    report["machine"]["affinity"] = affinity
    limits = {dest: getattr(args, dest) for _, dest, _ in _OBJECTIVES}
    checks = soak_objectives(report, limits, args.max_rss_drift)
    report["objectives"] = [
        {"name": c.name, "limit": c.limit, "value": c.value, "ok": c.ok} for c in checks
    ]
    report["ok"] = all(c.ok for c in checks)
    print_report(console, report, checks)
    print_soak(console, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0 if report["ok"] else 1


def _soak_config(args: argparse.Namespace, pinning: Any) -> Any:
    from loadtest.run import parse_mix
    from loadtest.soak import calls_from_capacity, plan_soak
    from loadtest.soak_run import SoakConfig

    calls = args.calls
    if args.capacity_json is not None:
        try:
            capacity = json.loads(args.capacity_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"--capacity-json: cannot read {args.capacity_json}: {exc}") from None
        calls = calls_from_capacity(capacity, args.fraction)
    if calls < 1 or not args.duration > 0 or not args.ramp > 0 or not args.batch_seconds > 0:
        raise ValueError("expected --calls >= 1, --duration > 0, --ramp > 0, --batch-seconds > 0")
    if args.warmup is not None and not 0 <= args.warmup < args.duration:
        raise ValueError("--warmup: expected 0 <= seconds < --duration")
    if not 1 <= args.workers <= 64:
        raise ValueError("expected --workers 1-64")
    if not args.max_rss_drift >= 0:
        raise ValueError("--max-rss-drift: expected a ratio >= 0 (0.05 is 5 %)")
    if args.deadline is not None and not args.deadline > 0:
        raise ValueError("expected --deadline > 0")
    mix = parse_mix(args.mix)
    plan_soak(calls, mix, args.duration, args.call_seconds, args.ramp)  # usage errors first
    return SoakConfig(
        calls=calls,
        mix=mix,
        duration_s=args.duration,
        call_s=args.call_seconds,
        warmup_s=args.warmup,
        ramp=args.ramp,
        workers=args.workers,
        worker_cpus=pinning.tester,
        batch_s=args.batch_seconds,
        deadline_s=args.deadline,
    )


async def _seed(args: argparse.Namespace, console: Console) -> int:
    from gateway.config import Settings
    from loadtest.run import parse_mix
    from loadtest.tenants import seed

    if args.agent_url != "echo" and not args.agent_secret:
        raise ValueError("--agent-url needs --agent-secret (or RYMI_LOADTEST_AGENT_SECRET)")
    settings = Settings.from_env(os.environ)
    setup = await seed(
        settings,
        list(parse_mix(args.mix)),
        pipeline=args.agent_url,
        pipeline_secret=args.agent_secret,
    )
    setup.save(args.out)
    console.print(f"wrote {args.out} ({', '.join(setup.carriers)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
