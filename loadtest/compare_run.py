"""``rymi-loadtest compare``: the same load against several gateway variants, side by side.

Each run is a whole ``run`` (:func:`~loadtest.run.run_load`, accounting, billing check,
objectives) against a freshly spawned environment: its own database, agent server and
gateway, so that no variant inherits another's warm caches or leftover calls. The runs
are interleaved over ``--rounds`` (:func:`~loadtest.compare.schedule`), and the table
gives each figure's median over the rounds with its min and max.

Before the first run, each variant's interpreter is asked which ``gateway`` package it
imports (and that checkout's commit): the report says what code each column measured,
and a ``python=`` variant that would run this checkout's code is flagged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from loadtest import options as opts
from loadtest.compare import (
    Variant,
    aggregate,
    gateway_loop,
    parse_variants,
    round_summary,
    schedule,
)

__all__ = ["SCHEMA", "add_compare_parser", "gateway_code", "run_compare"]

SCHEMA = "rymi-loadtest-compare/1"
_OURS = Path(__file__).resolve().parents[1]
_VARIANT_HELP = (
    "a gateway to load, at least two: NAME, python=PATH (the interpreter of another"
    " checkout's venv) and KEY=VALUE environment variables for it (RYMI_EVENT_LOOP=asyncio)"
)


def add_compare_parser(sub: Any) -> None:
    """The ``compare`` sub-command: ``--variant`` (repeated), ``--rounds`` and ``run``'s
    load, pinning and objective options (spawned gateways only)."""
    cmd = sub.add_parser("compare", help="the same load against gateway variants, interleaved")
    cmd.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[,python=PATH][,KEY=VALUE...]",
        help=_VARIANT_HELP,
    )
    cmd.add_argument("--rounds", type=int, default=2, help="runs of each variant, interleaved")
    opts.add_spawn(cmd)
    opts.add_pinning(cmd)
    opts.add_load(cmd)
    opts.add_objectives(cmd)
    # Every variant is spawned: the --target options of `run` do not apply.
    cmd.set_defaults(
        spawn=True,
        target=None,
        allow_target=[],
        setup=None,
        pid=None,
        database_url=None,
        agent_stats=None,
        workdir=None,
    )


async def run_compare(args: argparse.Namespace, pinning: Any, console: Console) -> int:
    """Run every variant ``--rounds`` times, interleaved; the table and ``--json``.

    Returns:
        0, or 1 when a variant missed an objective in a round.

    Raises:
        ValueError: invalid usage (the CLI exits 2).
        RuntimeError: a variant's gateway did not start (exit 3); names the variant.
    """
    from loadtest.environment import SPAWN_OWNED
    from loadtest.render import print_compare
    from loadtest.report import machine

    variants = parse_variants(args.variant, reserved=SPAWN_OWNED)
    order = schedule(variants, args.rounds)
    config = opts.run_config(args, pinning)
    base = opts.env_options(args, pinning)
    codes = {v.name: await gateway_code(v) for v in variants}
    for variant in variants:
        if codes[variant.name]["module"] is None:
            raise ValueError(
                f"--variant {variant.name}: python={variant.python} cannot import gateway"
                " (install that checkout in its venv: pip install -e DIR)"
            )
        if variant.python and codes[variant.name]["ours"]:
            console.print(
                f"warning: variant {variant.name}'s interpreter imports this checkout's gateway"
                f" ({codes[variant.name]['module']})",
                style="yellow",
                markup=False,
            )
    runs: list[dict[str, Any]] = []
    for number, variant in order:
        run = await _one_run(args, pinning, console, config, base, variant, number)
        runs.append(run)
        _print_run(console, run, args.rounds)
    names = [v.name for v in variants]
    figures = aggregate(names, [(r["variant"], r["summary"]) for r in runs])
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "config": _config(args, config, base),
        "variants": [v.as_dict() | {"gateway": codes[v.name]} for v in variants],
        "order": [[number, variant.name] for number, variant in order],
        "runs": runs,
        "aggregate": figures,
        "machine": machine() | {"affinity": pinning.as_dict()},
        "ok": all(row["ok"] for row in figures.values()),
    }
    print_compare(console, doc)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return 0 if doc["ok"] else 1


async def _one_run(
    args: argparse.Namespace,
    pinning: Any,
    console: Console,
    config: Any,
    base: Any,
    variant: Variant,
    number: int,
) -> dict[str, Any]:
    from loadtest.environment import environment
    from loadtest.report import billed_report, objectives
    from loadtest.run import run_load

    options = dataclasses.replace(base, python=variant.python, extra_env=variant.env)
    live, show = opts.progress(args, console)
    try:
        async with environment(options) as env:
            affinity = opts.affinity(pinning, env)
            with opts.showing(live):
                raw = await run_load(env, config, progress=show)
            report = await billed_report(env.database_url, raw)
            loop_name = gateway_loop(env.gateway.output()) if env.gateway else None
            workdir = str(env.workdir) if args.keep else None
    except RuntimeError as exc:
        raise RuntimeError(f"variant {variant.name}, round {number}: {exc}") from exc
    checks = objectives(report, opts.limits(args))
    report["objectives"] = opts.objective_rows(checks)
    report["ok"] = all(c.ok for c in checks)
    return {
        "round": number,
        "variant": variant.name,
        "gateway_loop": loop_name,
        "tester_loop": report["machine"]["tester_loop"],
        "affinity": affinity,
        "workdir": workdir,
        "deadline_hit": raw.deadline_hit,
        "summary": round_summary(report),
    }


def _print_run(console: Console, run: dict[str, Any], rounds: int) -> None:
    summary = run["summary"]
    verdict = "ok"
    if not summary["calls_complete"]:
        verdict = (
            f"FAILED: {summary['calls_completed']} of {summary['calls_planned']} calls completed"
        )
    elif not summary["ok"]:
        verdict = "objectives MISSED"
    console.print(
        f"round {run['round']}/{rounds} {run['variant']}: gateway CPU {summary['cpu_percent']}%"
        f" ({summary['cpu_percent_per_call']}%/call), {summary['calls_completed']} calls"
        f" completed, {summary['frames_lost']} frames lost, host steal"
        f" {summary['host_steal_percent']}%, {verdict}",
        markup=False,
    )


def _config(args: argparse.Namespace, config: Any, base: Any) -> dict[str, Any]:
    return {
        "calls": config.calls,
        "mix": config.mix,
        "ramp": config.ramp,
        "hold_s": config.hold_s,
        "durations": list(config.durations),
        "workers": config.workers,
        "rounds": args.rounds,
        "agent": base.agent,
        "agent_mode": base.agent_mode if base.agent == "external" else None,
        "gateway_env": dict(base.gateway_env),
        "limits": {k: v for k, v in opts.limits(args).items() if v is not None},
    }


async def gateway_code(variant: Variant) -> dict[str, Any]:
    """Which ``gateway`` package the variant's interpreter imports, started as its gateway
    will be (working directory, ``PYTHONPATH``), and that checkout's commit.

    Returns ``module`` (the package's directory, None if it cannot be imported),
    ``version``, ``commit`` and ``dirty`` (None outside a git checkout), and ``ours``
    (whether it is this checkout's code).
    """
    from loadtest.environment import without_our_paths

    python = variant.python or sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYMI_")}
    if variant.python is not None:
        env = without_our_paths(env)
    env |= dict(variant.env)
    probe = (
        "import gateway, os\n"
        "print(os.path.realpath(os.path.dirname(gateway.__file__)))\n"
        "print(gateway.__version__)"
    )
    with tempfile.TemporaryDirectory(prefix="rymi-compare-") as cwd:
        out = await _output([python, "-c", probe], env=env, cwd=cwd)
    lines = out.splitlines() if out else []
    if len(lines) < 2:
        return {"module": None, "version": None, "commit": None, "dirty": None, "ours": False}
    module = Path(lines[0])
    commit = await _output(["git", "-C", str(module), "rev-parse", "--short=12", "HEAD"])
    dirty = None
    if commit:
        # Read-only (`git diff` never writes the index): exit 1 when the tree differs.
        code = await _status(["git", "-C", str(module), "diff", "--quiet", "HEAD", "--"])
        dirty = None if code not in (0, 1) else code == 1
    return {
        "module": str(module),
        "version": lines[1],
        "commit": commit.strip() if commit else None,
        "dirty": dirty,
        "ours": module.is_relative_to(_OURS),
    }


async def _output(argv: list[str], **kwargs: Any) -> str | None:
    """``argv``'s standard output if it exits 0; None otherwise (or if it cannot start)."""
    with contextlib.suppress(OSError):
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL,
            **kwargs,
        )
        out, _ = await proc.communicate()
        if proc.returncode == 0:
            return out.decode(errors="replace")
    return None


async def _status(argv: list[str]) -> int | None:
    with contextlib.suppress(OSError):
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL,
        )
        return await proc.wait()
    return None
