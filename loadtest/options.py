"""The command-line options ``run``, ``capacity``, ``soak`` and ``compare`` share.

Each ``add_*`` function adds one group of options to a sub-command's parser; the other
functions turn the parsed options into what the run modules take
(:class:`~loadtest.environment.EnvOptions`, :class:`~loadtest.run.RunConfig`,
:class:`~loadtest.affinity.Pinning`). Errors in the options are ``ValueError`` naming
the option: the CLI exits 2 with the message.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from rich.console import Console

__all__ = [
    "OBJECTIVES",
    "SOAK_LIMITS",
    "WIRE_OBJECTIVES",
    "add_common",
    "add_load",
    "add_objectives",
    "add_pinning",
    "add_spawn",
    "affinity",
    "env_options",
    "limits",
    "objective_rows",
    "pinned",
    "progress",
    "run_config",
]

OBJECTIVES = (
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
"""``(flag, dest, help)`` of every objective :func:`loadtest.report.objectives` knows,
apart from :data:`WIRE_OBJECTIVES`."""

WIRE_OBJECTIVES = (
    ("--max-wire-p50-ms", "max_wire_p50_ms", "added p50 on the wire, carrier → agent (--wire), ms"),
    ("--max-wire-p99-ms", "max_wire_p99_ms", "added p99 on the wire, carrier → agent (--wire), ms"),
)
"""The objectives read off the loopback capture: only where ``--wire`` is an option."""

# A soak is about what goes wrong rarely: by default nothing may.
SOAK_LIMITS = {
    "max_loss": 0.0,
    "max_misordered": 0.0,
    "max_refusals": 0.0,
    "max_failed": 0.0,
    "max_billing_mismatches": 0.0,
}


def add_common(cmd: argparse.ArgumentParser) -> None:
    """Where the gateway is (spawned or ``--target``), and :func:`add_spawn`'s options."""
    where = cmd.add_mutually_exclusive_group()
    where.add_argument("--spawn", action="store_true", help="start a gateway (the default)")
    where.add_argument("--target", help="base URL of a running gateway (loopback unless allowed)")
    cmd.add_argument("--allow-target", action="append", default=[], metavar="HOST")
    cmd.add_argument("--setup", type=Path, help="tenants of a --target (rymi-loadtest seed)")
    cmd.add_argument("--pid", type=int, help="a --target gateway's pid, for CPU and RSS")
    cmd.add_argument("--database-url", help="a --target gateway's database, for billing checks")
    cmd.add_argument("--agent-stats", help="a --target's agent server /stats URL (--timing)")
    add_spawn(cmd)
    cmd.add_argument("--workdir", type=Path, help="spawned gateway's directory (kept)")


def add_spawn(cmd: argparse.ArgumentParser) -> None:
    """The agent, the spawned gateway's settings, the deadline and the output options."""
    cmd.add_argument("--agent", choices=["builtin-echo", "external"], default="builtin-echo")
    cmd.add_argument("--agent-mode", choices=["probe", "echo", "pattern"], default="probe")
    cmd.add_argument("--gateway-env", action="append", default=[], metavar="RYMI_X=V")
    cmd.add_argument(
        "--deadline", type=float, help="hard limit, seconds (600; soak: --duration + 60)"
    )
    cmd.add_argument("--json", type=Path, help="write the report here")
    cmd.add_argument("--keep", action="store_true", help="keep the temp directory")
    cmd.add_argument("--quiet", action="store_true", help="no live progress line")


def add_pinning(cmd: argparse.ArgumentParser) -> None:
    """``--gateway-cpus``, ``--agent-cpus``, ``--tester-cpus`` (:mod:`loadtest.affinity`)."""
    for flag, what in (
        ("--gateway-cpus", "the spawned gateway"),
        ("--agent-cpus", "the spawned agent server (--agent external)"),
        ("--tester-cpus", "the tester and its worker processes"),
    ):
        cmd.add_argument(flag, metavar="CPUS", help=f"run {what} on these CPUs: 0, 0,1 or 1-3")


_MAX_WIRE_S = 30.0  # ~60 k packets a second at 300 calls: keep the capture's memory bounded


def add_load(cmd: argparse.ArgumentParser) -> None:
    """How many calls, which carriers, how fast, for how long, by how many processes."""
    cmd.add_argument("--calls", type=int, default=10)
    cmd.add_argument("--mix", default="twilio=1")
    cmd.add_argument("--ramp", type=float, default=20.0, help="calls started per second")
    cmd.add_argument("--hold", type=float, default=10.0, help="seconds all calls stay up")
    cmd.add_argument("--durations", default="", help="per-call seconds, cycled (e.g. 5,10)")
    cmd.add_argument(
        "--workers", type=int, default=1, help="tester processes (one saturates near 100 calls)"
    )
    cmd.add_argument(
        "--wire",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="capture this much of the steady window on lo: the gateway's added latency "
        "by kernel timestamps (needs CAP_NET_RAW)",
    )


def add_objectives(
    cmd: argparse.ArgumentParser, defaults: dict[str, float] | None = None, *, wire: bool = True
) -> None:
    """One option per objective (:data:`OBJECTIVES`, and :data:`WIRE_OBJECTIVES` when
    ``wire``: the command has ``--wire``); unset unless in ``defaults``."""
    for flag, dest, text in (*OBJECTIVES, *(WIRE_OBJECTIVES if wire else ())):
        cmd.add_argument(flag, dest=dest, type=float, default=(defaults or {}).get(dest), help=text)


def limits(args: argparse.Namespace) -> dict[str, float | None]:
    """The objectives' limits as parsed (None: not stated, or not an option here)."""
    return {dest: getattr(args, dest, None) for _, dest, _ in (*OBJECTIVES, *WIRE_OBJECTIVES)}


def objective_rows(checks: Sequence[Any]) -> list[dict[str, Any]]:
    """:class:`~loadtest.report.Objective` results, JSON-ready."""
    return [{"name": c.name, "limit": c.limit, "value": c.value, "ok": c.ok} for c in checks]


@contextlib.contextmanager
def pinned(args: argparse.Namespace) -> Iterator[Any]:
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


def affinity(pinning: Any, env: Any) -> dict[str, Any]:
    """What was asked and what each process has, for the report's ``machine``."""
    return dict(pinning.report(gateway=env.gateway_pid, agent_server=env.agent_pid))


def env_options(args: argparse.Namespace, pinning: Any = None) -> Any:
    """The :class:`~loadtest.environment.EnvOptions` of the parsed options.

    Raises:
        ValueError: a malformed ``--gateway-env`` or ``--mix``.
        UnsafeTarget: a ``--target`` that is not loopback nor allowed.
    """
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


def run_config(args: argparse.Namespace, pinning: Any, calls: int | None = None) -> Any:
    """The :class:`~loadtest.run.RunConfig` of the parsed :func:`add_load` options.

    Raises:
        ValueError: an option out of range, naming it.
    """
    from loadtest.run import RunConfig, parse_mix

    durations = tuple(float(d) for d in args.durations.split(",") if d.strip())
    if any(not d > 0 for d in durations):
        raise ValueError("--durations: expected seconds > 0")
    deadline = 600.0 if args.deadline is None else args.deadline
    if args.calls < 1 or not args.ramp > 0 or args.hold < 0 or not deadline > 0:
        raise ValueError("expected --calls >= 1, --ramp > 0, --hold >= 0, --deadline > 0")
    if not 1 <= args.workers <= 64:
        raise ValueError("expected --workers 1-64")
    wire = getattr(args, "wire", 0.0)
    if not 0 <= wire <= _MAX_WIRE_S:
        raise ValueError(f"--wire: expected 0-{_MAX_WIRE_S:g} s, got {wire:g}")
    for flag, dest, _ in WIRE_OBJECTIVES:
        if getattr(args, dest, None) is not None and not wire:
            raise ValueError(f"{flag}: measured on the wire, so it needs --wire SECONDS")
    if wire:
        from loadtest.wire_capture import check_permission

        if (why := check_permission()) is not None:
            raise ValueError(why)
    return RunConfig(
        calls=calls or args.calls,
        mix=parse_mix(args.mix),
        ramp=math.inf if math.isinf(args.ramp) else args.ramp,
        hold_s=args.hold,
        durations=durations,
        deadline_s=deadline,
        workers=args.workers,
        worker_cpus=pinning.tester,
        wire_s=wire,
    )


def showing(live: Any) -> contextlib.AbstractContextManager[Any]:
    """The live line from :func:`progress` shown for a ``with`` block (nothing if None)."""
    return (
        contextlib.nullcontext()
        if live is None
        else cast(contextlib.AbstractContextManager[Any], live)
    )


def progress(args: argparse.Namespace, console: Console) -> Any:
    """A transient live line and its setter on a terminal; ``(None, None)`` otherwise."""
    if args.quiet or not console.is_terminal:
        return None, None
    from rich.live import Live
    from rich.text import Text

    live = Live(Text(""), console=console, refresh_per_second=4, transient=True)

    def show(line: str) -> None:
        live.update(Text(line))

    return live, show
