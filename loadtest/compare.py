"""``rymi-loadtest compare``, the logic: variants, the round order, per-round figures, spreads.

A *variant* is one gateway to load: ``NAME[,python=PATH][,KEY=VALUE...]``. ``python=``
is the interpreter that runs its ``python -m gateway serve`` (another checkout's venv
runs that checkout's code); every other ``KEY=VALUE`` is an environment variable for
that variant's gateway only (``RYMI_EVENT_LOOP=asyncio``). The same load is played
against every variant, interleaved over rounds (round 1: A, B, C; round 2: A, B, C; ...)
so that whatever drifts on the machine during a comparison (a neighbour, the CPU's
clock, the page cache) falls on every variant alike instead of on whichever ran last.

Each round's run report is cut down to a :func:`round_summary`; :func:`aggregate` gives
each figure's median over the rounds with its min and max (the spread says how far one
round can be trusted), the calls one core carries (``100 / CPU %/call``) and the CPU per
call against the first variant's. No I/O here except :func:`is_executable`.
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FIGURES",
    "Variant",
    "aggregate",
    "calls_per_core",
    "gateway_loop",
    "is_executable",
    "parse_variant",
    "parse_variants",
    "ratio",
    "round_summary",
    "schedule",
    "spread",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPTION = "--variant"

FIGURES: dict[str, tuple[str, ...]] = {
    "cpu_percent": ("gateway", "cpu_percent"),
    "cpu_percent_per_call": ("gateway", "cpu_percent_per_call"),
    "rss_kb_per_call": ("gateway", "rss_kb_per_call"),
    "rss_mb_peak": ("gateway", "rss_mb_peak"),
    "inbound_p50_ms": ("latency_ms", "inbound", "p50"),
    "inbound_p99_ms": ("latency_ms", "inbound", "p99"),
    "outbound_service_p50_ms": ("latency_ms", "outbound_service", "p50"),
    "outbound_service_p99_ms": ("latency_ms", "outbound_service", "p99"),
    "outbound_p99_ms": ("latency_ms", "outbound", "p99"),
    "jitter_p99_ms": ("latency_ms", "pacing_jitter", "p99"),
    "answer_p99_ms": ("latency_ms", "answer", "p99"),
    "healthz_p99_ms": ("latency_ms", "healthz_probe", "p99"),
    "tester_lateness_p99_ms": ("latency_ms", "tester_lateness", "p99"),
    "agent_server_cpu_percent": ("agent_server", "cpu_percent"),
    "tester_cpu_percent": ("tester", "cpu_percent"),
    "host_steal_percent": ("host", "steal_percent"),
    "gateway_in_p99_ms": ("gateway_view", "added_in", "p99_ms"),
    "gateway_out_p99_ms": ("gateway_view", "added_out", "p99_ms"),
}
"""The figures of a run report compared between variants: name → path in the report."""

_LOST = ("lost_inbound", "lost_outbound", "content_lost")
_MISORDERED = ("duplicated", "reordered", "excess_inbound", "excess_outbound")


@dataclass(frozen=True, slots=True)
class Variant:
    """One gateway to compare."""

    name: str
    python: str | None = None
    """The interpreter that runs its gateway; None: the tester's own."""
    env: tuple[tuple[str, str], ...] = ()
    """Environment variables for its gateway only, in the order given."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"name": self.name, "python": self.python, "env": dict(self.env)}


def is_executable(path: str) -> bool:
    """Whether ``path`` is a file this process may execute."""
    return os.path.isfile(path) and os.access(path, os.X_OK)


def parse_variant(
    text: str,
    *,
    reserved: Iterable[str] = (),
    executable: Callable[[str], bool] = is_executable,
) -> Variant:
    """``NAME[,python=PATH][,KEY=VALUE...]`` → a :class:`Variant`.

    Values cannot contain a comma. ``python=`` is made absolute but symlinks are kept: a
    venv's ``bin/python`` is a link whose *location* names the venv.

    Raises:
        ValueError: a name that is not ``[A-Za-z0-9][A-Za-z0-9_.+-]*``, an item without
            ``=``, a key that is not an environment variable name, a key given twice or
            in ``reserved`` (the spawn sets it), or a ``python=`` that is not an
            executable file; the message names ``--variant`` and the variant.
    """
    name, *items = (part.strip() for part in text.split(","))
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{_OPTION}: expected NAME[,python=PATH][,KEY=VALUE...] with a NAME of letters,"
            f" digits and _.+-, got {text!r}"
        )
    where = f"{_OPTION} {name}"
    python: str | None = None
    env: dict[str, str] = {}
    blocked = frozenset(reserved)
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{where}: expected KEY=VALUE, got {item!r}")
        if key == "python":
            if python is not None:
                raise ValueError(f"{where}: python= given twice")
            python = os.path.abspath(os.path.expanduser(value.strip()))
            if not executable(python):
                raise ValueError(f"{where}: python={value.strip()} is not an executable file")
            continue
        if not _ENV_KEY.fullmatch(key):
            raise ValueError(f"{where}: {key!r} is not an environment variable name")
        if key in env:
            raise ValueError(f"{where}: {key} given twice")
        if key in blocked:
            raise ValueError(f"{where}: {key} is set by the run itself, not by a variant")
        env[key] = value
    return Variant(name, python, tuple(env.items()))


def parse_variants(
    texts: Sequence[str],
    *,
    reserved: Iterable[str] = (),
    executable: Callable[[str], bool] = is_executable,
) -> list[Variant]:
    """Every ``--variant``: at least two, names unique (as :func:`parse_variant`).

    Raises:
        ValueError: fewer than two, a name given twice, or a malformed variant.
    """
    blocked = frozenset(reserved)
    variants = [parse_variant(t, reserved=blocked, executable=executable) for t in texts]
    if len(variants) < 2:
        raise ValueError(f"{_OPTION}: expected at least two variants, got {len(variants)}")
    seen: set[str] = set()
    for variant in variants:
        if variant.name in seen:
            raise ValueError(f"{_OPTION}: the name {variant.name!r} is given twice")
        seen.add(variant.name)
    return variants


def schedule(variants: Sequence[Variant], rounds: int) -> list[tuple[int, Variant]]:
    """The runs in order, ``(round, variant)``, rounds numbered from 1: A, B, A, B, ...

    Raises:
        ValueError: ``rounds`` < 1.
    """
    if rounds < 1:
        raise ValueError(f"--rounds: expected at least 1, got {rounds}")
    return [(r, v) for r in range(1, rounds + 1) for v in variants]


def gateway_loop(log: str) -> str | None:
    """The event loop a gateway's log says it runs (``event loop: uvloop``); None if it
    does not say (a gateway older than ``RYMI_EVENT_LOOP``)."""
    found = re.findall(r"event loop: (\w+)", log)
    return found[-1] if found else None


def round_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """What ``compare`` keeps of one run report: :data:`FIGURES`, frames, calls, verdict.

    The verdict is the report's objectives and every planned call completed.
    """
    figures = {name: _at(report, path) for name, path in FIGURES.items()}
    frames, calls = report["frames"], report["calls"]
    # A round whose calls did not all complete measured something else than the load
    # asked for (a gateway that answered nothing costs no CPU "per call"): never ok.
    complete = calls["completed"] == calls["planned"]
    return figures | {
        "frames_sent": frames.get("sent", 0),
        "frames_lost": sum(frames.get(k, 0) for k in _LOST),
        "frames_misordered": sum(frames.get(k, 0) for k in _MISORDERED),
        "loss_ratio": frames.get("loss_ratio", 0.0),
        "calls_planned": calls["planned"],
        "calls_answered": calls["answered"],
        "calls_completed": calls["completed"],
        "calls_failed": calls["failed"],
        "calls_refused": sum(calls["refused"].values()),
        "window_s": (report.get("gateway") or {}).get("window_s"),
        "objectives": list(report.get("objectives", [])),
        "calls_complete": complete,
        "ok": bool(report.get("ok", True)) and complete,
    }


def spread(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Median, min and max of the known ``values`` and how many there were."""
    known = [float(v) for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None, "rounds": 0}
    return {
        "median": round(statistics.median(known), 4),
        "min": min(known),
        "max": max(known),
        "rounds": len(known),
    }


def calls_per_core(cpu_percent_per_call: float | None) -> float | None:
    """Calls one core carries at this CPU cost: ``100 / (CPU %/call)``; None if unknown."""
    if cpu_percent_per_call is None or cpu_percent_per_call <= 0:
        return None
    return round(100 / cpu_percent_per_call, 1)


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base`` (3 decimals); None when either is unknown or ``base`` <= 0."""
    if value is None or base is None or base <= 0:
        return None
    return round(value / base, 3)


def aggregate(
    names: Sequence[str], summaries: Sequence[tuple[str, Mapping[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Per variant (in ``names`` order): each figure's :func:`spread` over its rounds,
    frames lost and misordered over all rounds, calls per core, the CPU per call against
    the first variant's, and whether every round met its objectives.

    ``summaries`` are ``(variant name, round_summary)`` pairs, in any order.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [s for n, s in summaries if n == name]
        figures: dict[str, Any] = {key: spread(s[key] for s in mine) for key in FIGURES}
        out[name] = figures | {
            "rounds": len(mine),
            "frames_lost": sum(s["frames_lost"] for s in mine),
            "frames_misordered": sum(s["frames_misordered"] for s in mine),
            "calls_failed": sum(s["calls_failed"] for s in mine),
            "calls_per_core": calls_per_core(figures["cpu_percent_per_call"]["median"]),
            "ok": all(s["ok"] for s in mine),
        }
    base = out[names[0]]["cpu_percent_per_call"]["median"] if names else None
    for figures in out.values():
        figures["cpu_per_call_ratio"] = ratio(figures["cpu_percent_per_call"]["median"], base)
    return out


def _at(report: Mapping[str, Any], path: Sequence[str]) -> float | None:
    node: Any = report
    for key in path:
        if not isinstance(node, Mapping) or node.get(key) is None:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None
