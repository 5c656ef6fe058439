"""The host under the run: CPU time stolen by the hypervisor, and a speed probe.

On a virtual machine the gateway's CPU per call and its latency move with what the
host's other tenants do: the hypervisor runs another guest on the physical CPU and the
guest's vCPU waits. Linux counts that wait as *steal* (``/proc/stat``, the eighth
value of each ``cpu`` line, proc(5)). A run taken while the host stole 40 % of a vCPU
measures the host, not the gateway, so every report says how much was stolen on each
CPU over the window its CPU figures use.

Steal is not the whole story: a nested guest (a VM inside a VM) can run slower without
counting steal, when the outer hypervisor takes the time from the inner one. The speed
probe times a fixed piece of pure-Python work in the tester before and after the run,
so two reports taken an hour apart can be told apart by the machine's speed as well.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CpuTicks",
    "HostSample",
    "host_figures",
    "parse_proc_stat",
    "read_host",
    "speed_probe_ms",
    "steal_series",
]

_STEAL_FIELD = 7
"""Index of steal among a ``cpu`` line's values (user nice system idle iowait irq softirq steal)."""
_COUNTED_FIELDS = 8
"""Values that add up to the CPU's time: guest and guest_nice are already inside user and nice."""
_PROBE_STEPS = 1_000_000


@dataclass(frozen=True, slots=True)
class CpuTicks:
    """One CPU's counters from ``/proc/stat``, in clock ticks since boot."""

    total: int
    idle: int
    """Idle and waiting for I/O."""
    steal: int


@dataclass(frozen=True, slots=True)
class HostSample:
    """One reading of ``/proc/stat``: when (monotonic) and each CPU's counters."""

    at: float
    cpus: Mapping[str, CpuTicks]
    """``"all"`` for the first line, then ``"0"``, ``"1"``, …"""


def parse_proc_stat(text: str) -> dict[str, CpuTicks]:
    """The ``cpu`` lines of ``/proc/stat`` (proc(5)); kernels before 2.6.11 have no steal."""
    cpus: dict[str, CpuTicks] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *values = line.split()
        ticks = [int(v) for v in values[:_COUNTED_FIELDS]]
        ticks += [0] * (_COUNTED_FIELDS - len(ticks))
        key = name[3:] or "all"
        cpus[key] = CpuTicks(total=sum(ticks), idle=ticks[3] + ticks[4], steal=ticks[_STEAL_FIELD])
    return cpus


def read_host(stat: Path = Path("/proc/stat")) -> HostSample | None:
    """Read the host's CPU counters now; None where there is no ``/proc/stat``."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    return HostSample(time.monotonic(), parse_proc_stat(text))


def host_figures(samples: Sequence[HostSample], window: tuple[float, float]) -> dict[str, Any]:
    """Steal and busy % of each CPU over ``window`` (all samples when too few fall in it).

    Busy is the time the CPU ran something (user, system, interrupts); steal is not in it.
    """
    inside = [s for s in samples if window[0] <= s.at <= window[1]]
    if len(inside) < 2:
        inside = list(samples)
    if len(inside) < 2:
        return {"samples": len(samples)}
    first, last = inside[0], inside[-1]
    steal: dict[str, float] = {}
    busy: dict[str, float] = {}
    for name, end in last.cpus.items():
        start = first.cpus.get(name)
        if start is None or end.total <= start.total:
            continue
        elapsed = end.total - start.total
        stolen = end.steal - start.steal
        steal[name] = round(100 * stolen / elapsed, 1)
        busy[name] = round(100 * (elapsed - (end.idle - start.idle) - stolen) / elapsed, 1)
    return {
        "samples": len(samples),
        "window_s": round(last.at - first.at, 2),
        "steal_percent": steal.pop("all", None),
        "busy_percent": busy.pop("all", None),
        "steal_percent_by_cpu": steal,
        "busy_percent_by_cpu": busy,
    }


def steal_series(
    samples: Sequence[HostSample], origin: float, step_s: float = 60.0
) -> list[list[float]]:
    """``[seconds from origin, steal %]`` of all CPUs per ``step_s``: when the host took.

    A long soak's one figure hides a bad minute; the series places it next to the
    losses and latencies of the same minute.
    """
    if not samples:
        return []
    series: list[list[float]] = []
    start = samples[0]
    for sample in samples[1:]:
        if sample.at - start.at < step_s and sample is not samples[-1]:
            continue
        begin, end = start.cpus.get("all"), sample.cpus.get("all")
        if begin is not None and end is not None and end.total > begin.total:
            share = 100 * (end.steal - begin.steal) / (end.total - begin.total)
            series.append([round(sample.at - origin, 1), round(share, 1)])
        start = sample
    return series


def speed_probe_ms(steps: int = _PROBE_STEPS) -> float:
    """Milliseconds a fixed pure-Python loop takes here now: the machine's speed.

    The best of three, so that one preemption does not count. Only the same machine's
    figures compare: a lower figure is a faster hour (docs/loadtest.md, "The host").
    """
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        total = 0
        for step in range(steps):
            total += step
        best = min(best, time.perf_counter() - began)
    return round(best * 1000, 2)
