"""``rymi-loadtest``: synthetic carrier calls against a gateway, capacity, faults.

Commands (``rymi-loadtest --help``; docs/loadtest.md has the walkthrough):

* ``run`` (the default): N calls by carrier mix, ramp and hold; the table, ``--json``,
  ``--plot``; exit 1 when an objective (``--max-p99-ms``, ``--max-loss``, ...) is missed.
* ``capacity``: ``run`` at rising concurrency until a level is not clean.
* ``soak``: a constant number of calls, recycled, for ``--duration`` (an hour); the
  gateway's RSS drift after warm-up, loss and every call's billing; exit 1 when missed.
* ``compare``: the same load against several gateway variants (another checkout's
  interpreter, other settings), interleaved over rounds; CPU per call side by side.
* ``fault malformed``: malformed frames on side sockets next to healthy calls.
* ``fault kill-gateway`` / ``fault restart-redis``: two gateways on one Redis; SIGKILL
  one gateway, or restart Redis empty, in the middle of load.
* ``seed``: create the load tester's tenants in a gateway's database (for ``--target``).

``run``, ``capacity``, ``soak`` and ``compare`` take ``--gateway-cpus``, ``--agent-cpus``
and ``--tester-cpus`` (CPU lists, :mod:`loadtest.affinity`). The command-line options
they share are in :mod:`loadtest.options`; every event loop of the tester is uvloop's
when importable (:mod:`loadtest.loop`).

Exit codes: 0 met, 1 an objective missed (or a fault run failed), 2 invalid usage or an
unsafe target, 3 the run could not be made (gateway did not start, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from loadtest import loop as tester_loop
from loadtest import options as opts
from loadtest.compare_run import add_compare_parser, run_compare

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rymi-loadtest", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="play N calls (default command)")
    opts.add_common(run)
    opts.add_pinning(run)
    opts.add_load(run)
    opts.add_objectives(run)
    run.add_argument("--plot", type=Path, help="PNG of gateway CPU over the run (matplotlib)")

    cap = sub.add_parser("capacity", help="step concurrency up until a level is not clean")
    opts.add_common(cap)
    opts.add_pinning(cap)
    opts.add_load(cap)
    cap.add_argument("--levels", default="25,50,100,150,200", help="comma-separated call counts")
    cap.add_argument("--max-p99-ms", type=float, default=10.0)
    cap.add_argument("--max-jitter-p99-ms", type=float, default=10.0)
    cap.add_argument("--max-probe-p99-ms", type=float, default=50.0, help="loop-lag proxy")
    cap.add_argument(
        "--max-steal-percent",
        type=float,
        default=5.0,
        help="CPU time the host may steal over a level's window (virtual machines)",
    )
    for flag, dest, text in opts.WIRE_OBJECTIVES:
        cap.add_argument(flag, dest=dest, type=float, help=text)
    cap.add_argument("--plot", type=Path, help="PNG of latency and CPU against concurrency")
    cap.add_argument("--all-levels", action="store_true", help="go on after a level fails")

    _soak_parser(sub)
    add_compare_parser(sub)

    fault = sub.add_parser("fault", help="scripted fault runs")
    fault.add_argument("kind", choices=["malformed", "kill-gateway", "restart-redis"])
    opts.add_common(fault)
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


def _soak_parser(sub: Any) -> None:
    soak = sub.add_parser("soak", help="constant calls for a long time: RSS drift, loss, billing")
    opts.add_common(soak)
    opts.add_pinning(soak)
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
    opts.add_objectives(soak, opts.SOAK_LIMITS, wire=False)


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
            return tester_loop.run(_seed(args, console))
        if args.command == "fault" and args.kind == "restart-redis":
            from loadtest.fault_redis import run_restart_redis

            return tester_loop.run(run_restart_redis(args, opts.env_options(args), console))
        if args.command == "fault" and args.kind == "kill-gateway":
            from loadtest.fault_kill import run_kill_gateway

            options = opts.env_options(args)
            if args.redis_url:
                options = dataclasses.replace(options, redis_url=args.redis_url)
            return tester_loop.run(run_kill_gateway(args, options, console))
        if args.command == "fault":
            from loadtest.fault import run_fault

            return tester_loop.run(run_fault(args, opts.env_options(args), console))
        command = {"run": _run, "capacity": _capacity, "soak": _soak, "compare": run_compare}[
            args.command
        ]
        with opts.pinned(args) as pinning:
            return tester_loop.run(command(args, pinning, console))
    except (UnsafeTarget, ValueError) as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        return 2
    except RuntimeError as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        return 3
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace, pinning: Any, console: Console) -> int:
    from loadtest.environment import environment
    from loadtest.render import print_report
    from loadtest.report import billed_report, objectives
    from loadtest.run import run_load

    config = opts.run_config(args, pinning)
    options = opts.env_options(args, pinning)
    live, show = opts.progress(args, console)
    async with environment(options) as env:
        affinity = opts.affinity(pinning, env)
        with opts.showing(live):
            raw = await run_load(env, config, progress=show)
        report = await billed_report(env.database_url, raw)
    report["machine"]["affinity"] = affinity
    checks = objectives(report, opts.limits(args))
    report["objectives"] = opts.objective_rows(checks)
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
    if not 0 <= args.max_steal_percent <= 100:
        raise ValueError(f"--max-steal-percent: expected 0 to 100, got {args.max_steal_percent:g}")
    limits = Limits(
        args.max_p99_ms,
        args.max_jitter_p99_ms,
        args.max_probe_p99_ms,
        max_steal_percent=args.max_steal_percent,
        max_wire_p50_ms=args.max_wire_p50_ms,
        max_wire_p99_ms=args.max_wire_p99_ms,
    )
    base = opts.run_config(args, pinning, calls=levels[0])
    live, show = opts.progress(args, console)

    def on_level(level: dict[str, Any], report: dict[str, Any]) -> None:
        state = "clean" if level["clean"] else "NOT clean: " + ", ".join(level["reasons"])
        console.print(f"{level['calls']} calls: {state}")

    async with environment(opts.env_options(args, pinning)) as env:
        affinity = opts.affinity(pinning, env)
        with opts.showing(live):
            result = await search(
                env,
                levels,
                base,
                limits,
                progress=show,
                on_level=on_level,
                all_levels=args.all_levels,
            )
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
    live, show = opts.progress(args, console)
    async with environment(opts.env_options(args, pinning)) as env:
        affinity = opts.affinity(pinning, env)
        with opts.showing(live):
            report = await run_soak(env, config, progress=show)
    report["machine"]["affinity"] = affinity
    checks = soak_objectives(report, opts.limits(args), args.max_rss_drift)
    report["objectives"] = opts.objective_rows(checks)
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
