"""Capacity search: step the concurrency up until the gateway stops being clean.

Each level is a full run (:func:`~loadtest.run.run_load`) against the same gateway, all
calls live together for the hold. A level is *clean* when no frame was lost, duplicated
or reordered, no call failed, was refused or was billed other units than it sent, the
gateway-added p99 latency (both legs, when an external agent measures them) and the
pacing-jitter p99 are within their limits, and the ``/healthz`` probe p99 (the
gateway's event-loop lag) is within its limit (outbound latency is judged *beyond
pacing*, without the playout queue, which is reported next to it). The search stops
at the first level that is not clean and reports the highest clean one, with the
gateway's CPU and memory per call there. Each level also shows the added p99 of the
frames sent while all its calls were up (none being set up or torn down), beside the
whole run's; the verdict uses the whole run's, set-up included.

The load tester shares the machine: when its *own* send lateness p99 exceeds
``max_tester_lateness_ms`` the level is marked ``tester saturated`` (the figures would
measure the tester, not the gateway) and the search stops there too. So is a level
whose host stole more than ``max_steal_percent`` of the CPUs' time over the window
(``host busy``: on a virtual machine, another tenant had the physical CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from loadtest.environment import Environment
from loadtest.report import billed_report, wire_in
from loadtest.run import RunConfig, run_load

__all__ = ["Limits", "judge", "search"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What a clean level must meet."""

    max_p99_ms: float = 10.0
    max_jitter_p99_ms: float = 10.0
    max_probe_p99_ms: float = 50.0
    max_tester_lateness_ms: float = 20.0
    max_steal_percent: float = 5.0
    max_wire_p50_ms: float | None = None
    """On the wire, carrier → agent (``--wire``): None is no limit."""
    max_wire_p99_ms: float | None = None


def judge(report: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """One level's figures and the reasons it is not clean (none: clean)."""
    lat = report["latency_ms"]
    frames = report["frames"]
    calls = report["calls"]
    gateway = report.get("gateway") or {}
    lost = sum(frames.get(k, 0) for k in ("lost_inbound", "lost_outbound", "content_lost"))
    misordered = sum(
        frames.get(k, 0) for k in ("duplicated", "reordered", "excess_inbound", "excess_outbound")
    )
    level = {
        "calls": report["config"]["calls"],
        "inbound_p99_ms": lat["inbound"]["p99"],
        "outbound_p99_ms": lat["outbound_service"]["p99"],
        "queue_p99_ms": lat["outbound"]["p99"],
        "inbound_steady_p99_ms": lat["inbound_steady"]["p99"],
        "outbound_steady_p99_ms": lat["outbound_service_steady"]["p99"],
        "jitter_p99_ms": lat["pacing_jitter"]["p99"],
        "probe_p99_ms": lat["healthz_probe"]["p99"],
        "tester_lateness_p99_ms": lat["tester_lateness"]["p99"],
        "lost_frames": lost,
        "lost_by_kind": {
            k: frames.get(k, 0) for k in ("lost_inbound", "lost_outbound", "content_lost")
        },
        "agent_connect_p99_ms": lat["agent_connect"]["p99"],
        "billing_checked": report["billing"].get("checked", 0),
        "billing_mismatched": report["billing"].get("mismatched", 0),
        "misordered_frames": misordered,
        "cpu_percent": gateway.get("cpu_percent"),
        "cpu_percent_per_call": gateway.get("cpu_percent_per_call"),
        "rss_kb_per_call": gateway.get("rss_kb_per_call"),
        "steal_percent": (report.get("host") or {}).get("steal_percent"),
        "speed_probe_ms": (report.get("host") or {}).get("speed_probe_ms"),
        "gateway_in_p99_ms": _view(report, "added_in"),
        "gateway_out_p99_ms": _view(report, "added_out"),
        "wire_in_p50_ms": wire_in(report, "p50"),
        "wire_in_p99_ms": wire_in(report, "p99"),
    }
    reasons = []
    if lost:
        reasons.append(f"{lost} frames lost")
    if misordered:
        reasons.append(f"{misordered} frames duplicated/reordered")
    if calls["failed"] or calls["refused"] or calls["answered"] < calls["planned"]:
        reasons.append("calls failed or refused")
    if level["billing_mismatched"]:
        reasons.append(f"{level['billing_mismatched']} calls billed other units")
    for key, limit, what in (
        ("inbound_p99_ms", limits.max_p99_ms, "inbound p99"),
        ("outbound_p99_ms", limits.max_p99_ms, "outbound p99"),
        ("jitter_p99_ms", limits.max_jitter_p99_ms, "jitter p99"),
        ("probe_p99_ms", limits.max_probe_p99_ms, "loop lag (probe p99)"),
    ):
        if level[key] is not None and level[key] > limit:
            reasons.append(f"{what} {level[key]:.3g} ms > {limit:g}")
    reasons.extend(_wire_reasons(level, limits))
    tester = level["tester_lateness_p99_ms"]
    if tester is not None and tester > limits.max_tester_lateness_ms:
        reasons.append("tester saturated")
    steal = level["steal_percent"]
    if steal is not None and steal > limits.max_steal_percent:
        reasons.append(f"host busy (steal {steal:g} % > {limits.max_steal_percent:g})")
    if report.get("deadline_hit"):
        reasons.append("deadline")
    return level | {"clean": not reasons, "reasons": reasons}


def _view(report: dict[str, Any], key: str) -> float | None:
    """The gateway's own p99 (its histogram over the steady window), when scraped."""
    view = report.get("gateway_view")
    return None if view is None else view[key]["p99_ms"]


async def search(
    env: Environment,
    levels: Sequence[int],
    base: RunConfig,
    limits: Limits,
    *,
    progress: Callable[[str], None] | None = None,
    on_level: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    all_levels: bool = False,
) -> dict[str, Any]:
    """Run ``levels`` in order until one is not clean (``all_levels``: run them all).

    The highest clean level is the highest one below the first that is not clean.
    """
    done: list[dict[str, Any]] = []
    for calls in levels:
        raw = await run_load(env, replace(base, calls=calls), progress=progress)
        report = await billed_report(env.database_url, raw)
        level = judge(report, limits)
        done.append(level)
        if on_level is not None:
            on_level(level, report)
        if not level["clean"] and not all_levels:
            break
    best = None
    for level in done:
        if not level["clean"]:
            break
        best = level
    return {
        "levels": done,
        "highest_clean": best["calls"] if best else None,
        "at_highest_clean": best,
        "limits": {
            "max_p99_ms": limits.max_p99_ms,
            "max_jitter_p99_ms": limits.max_jitter_p99_ms,
            "max_probe_p99_ms": limits.max_probe_p99_ms,
            "max_tester_lateness_ms": limits.max_tester_lateness_ms,
            "max_steal_percent": limits.max_steal_percent,
            "max_wire_p50_ms": limits.max_wire_p50_ms,
            "max_wire_p99_ms": limits.max_wire_p99_ms,
        },
    }


def _wire_reasons(level: dict[str, Any], limits: Limits) -> list[str]:
    """Why the level misses the limits on the wire (none stated: no reasons)."""
    reasons = []
    for key, limit, what in (
        ("wire_in_p50_ms", limits.max_wire_p50_ms, "wire p50"),
        ("wire_in_p99_ms", limits.max_wire_p99_ms, "wire p99"),
    ):
        if limit is None:
            continue
        value = level[key]
        if value is None:
            reasons.append(f"{what} not measured")
        elif value > limit:
            reasons.append(f"{what} {value:.3g} ms > {limit:g}")
    return reasons
