"""Soak runs, sans I/O: recycled call plans, the warm-up rule, RSS drift, batch tallies.

A soak holds a constant number of calls for a long time (an hour by default) so that
what a short run cannot show becomes visible: memory that grows with every call
handled, frames lost once in thousands of calls, billing that is off for one call in a
hundred. :mod:`loadtest.soak_run` plays it; everything that decides is here.

**Slots.** ``calls`` slots each play one call after another. Slot ``s`` starts on the
ramp, like call ``s`` of a run; its first call hangs up at ``ramp_end + (s + 1) *
call_s / calls``, every later one lasts ``call_s``, and the slot's next call is answered
as the previous one hangs up. So the hang-ups (and new calls) are spread evenly, ``calls
/ call_s`` per second, instead of all slots hanging up together, and the gateway always
carries ``calls`` calls (plus, for a moment, a call being answered). Every call ends at
the soak's end; a last call shorter than :data:`MIN_CALL_S` is folded into the one before.

**Drift.** RSS drift = (RSS at the end - RSS after warm-up) / RSS after warm-up, each a
median of :data:`END_SAMPLES` consecutive ``/proc`` samples (one every 0.5 s), so one
sample (a garbage collection, an allocator trim) does not decide. The warm-up is
excluded because a gateway's first minutes legitimately grow: caches, pools, the
allocator's arenas, the first of each kind of object. Default warm-up
(:data:`WARMUP_RULE`): 10 % of the duration, at least 30 s, at most half the duration
(a short soak still measures something).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from loadtest.player import CallPlan
from loadtest.report import DIFFERING_ROWS, Objective, loss_ratio, objectives
from loadtest.run import RunConfig, plan_calls
from loadtest.stats import summarize

__all__ = [
    "END_SAMPLES",
    "LATENCY_KINDS",
    "MIN_CALL_S",
    "WARMUP_RULE",
    "Drift",
    "Tally",
    "calls_from_capacity",
    "downsample",
    "merge_summaries",
    "plan_soak",
    "rss_drift",
    "soak_objectives",
    "warmup_for",
]

WARMUP_RULE = "10% of the duration, at least 30 s, at most half the duration"
END_SAMPLES = 5
"""RSS samples (0.5 s apart) whose median is the RSS after warm-up, and at the end."""
MIN_CALL_S = 1.0
"""Shortest ``call_s``, and of a slot's last call (a shorter one is folded into the one
before). A slot's first call may be shorter: it staggers the hang-ups."""
LATENCY_KINDS = (
    "answer",
    "inbound",
    "outbound",
    "outbound_service",
    "agent_connect",
    "pacing_jitter",
    "tester_lateness",
)
"""The per-call latencies of a run report (``healthz_probe`` is per run, not per call)."""
_LOST = ("lost_inbound", "lost_outbound", "content_lost")
_CALL_COUNTS = ("played", "answered", "completed", "failed")

T = TypeVar("T")


def warmup_for(duration_s: float) -> float:
    """The default warm-up of a soak of ``duration_s`` (:data:`WARMUP_RULE`)."""
    return min(max(0.1 * duration_s, 30.0), 0.5 * duration_s)


def calls_from_capacity(report: Mapping[str, Any], fraction: float) -> int:
    """``fraction`` of the highest clean level of a ``capacity --json`` report (floor, >= 1).

    Raises:
        ValueError: ``fraction`` not in (0, 1], or the report has no clean level.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"--fraction: expected a fraction in (0, 1], got {fraction}")
    if "levels" not in report:
        raise ValueError("--capacity-json: expected a `rymi-loadtest capacity --json` report")
    best = report.get("highest_clean")
    if not isinstance(best, int) or best < 1:
        raise ValueError("--capacity-json: the capacity run found no clean level")
    return max(1, math.floor(best * fraction + 1e-9))


def plan_soak(
    calls: int, mix: dict[str, int], duration_s: float, call_s: float, ramp: float = 20.0
) -> list[CallPlan]:
    """The calls of a soak: ``calls`` slots of back-to-back calls (see the module doc).

    Raises:
        ValueError: ``calls`` < 1, ``call_s`` < :data:`MIN_CALL_S`, or a duration that
            does not outlast the ramp by a call's minimum.
    """
    if calls < 1:
        raise ValueError(f"expected at least 1 call, got {calls}")
    if not call_s >= MIN_CALL_S:
        raise ValueError(f"--call-seconds: expected >= {MIN_CALL_S:g} s, got {call_s}")
    slots = plan_calls(RunConfig(calls=calls, mix=mix, ramp=ramp, hold_s=0.0))
    ramp_end = slots[-1].start_s
    if not duration_s >= ramp_end + MIN_CALL_S:
        raise ValueError(
            f"--duration: expected >= {ramp_end + MIN_CALL_S:g} s (the ramp and one call)"
        )
    planned: list[tuple[float, float, str]] = []
    for slot in slots:
        start = slot.start_s
        end = ramp_end + (slot.index + 1) * call_s / calls
        while start < duration_s:
            end = min(end, duration_s)
            if duration_s - end < MIN_CALL_S:
                end = duration_s
            # Microseconds: 0.1 + 3.0 is not 3.1 in binary, and a frame count is a ceil.
            planned.append((round(start, 6), round(end - start, 6), slot.carrier))
            start, end = end, end + call_s
    planned.sort()
    return [CallPlan(i, c, start, length) for i, (start, length, c) in enumerate(planned)]


@dataclass(frozen=True, slots=True)
class Drift:
    """RSS after warm-up and at the end (medians), and the drift between them."""

    baseline_bytes: float
    end_bytes: float
    baseline_window_s: tuple[float, float]
    """Times of the first and last sample of the baseline median (s from the start)."""
    end_window_s: tuple[float, float]
    ratio: float
    """(end - baseline) / baseline: 0.05 is 5 % more memory at the end."""


def rss_drift(
    samples: Sequence[tuple[float, int]], warmup_s: float, end_s: float, n: int = END_SAMPLES
) -> Drift | None:
    """The drift of ``(t, rss_bytes)`` samples between ``warmup_s`` and ``end_s``.

    The baseline is the median of the first ``n`` samples at or after ``warmup_s``, the
    end the median of the last ``n`` at or before ``end_s`` (they overlap when fewer than
    ``2 n`` samples are in between). None without a sample in that span.
    """
    inside = sorted(s for s in samples if warmup_s <= s[0] <= end_s)
    if not inside or n < 1:
        return None
    head, tail = inside[:n], inside[-n:]
    baseline = statistics.median(r for _, r in head)
    end = statistics.median(r for _, r in tail)
    if baseline <= 0:
        return None
    return Drift(
        baseline_bytes=baseline,
        end_bytes=end,
        baseline_window_s=(head[0][0], head[-1][0]),
        end_window_s=(tail[0][0], tail[-1][0]),
        ratio=(end - baseline) / baseline,
    )


def downsample(points: Sequence[T], limit: int = 240) -> list[T]:
    """At most ``limit`` (>= 2) of ``points``, evenly strided, the first and last kept."""
    if len(points) <= limit:
        return list(points)
    step = math.ceil((len(points) - 1) / (limit - 1))
    picked = list(points[::step])
    if (len(points) - 1) % step:
        picked.append(points[-1])
    return picked


def merge_summaries(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summaries of disjoint batches (``Summary.as_dict()``) as one.

    ``count`` and ``max`` are exact and ``mean`` is weighted by count; a percentile
    cannot be merged without the values, so each is the worst batch's: an upper bound.
    """
    filled = [p for p in parts if p.get("count")]
    if not filled:
        return summarize([]).as_dict()
    count = sum(int(p["count"]) for p in filled)
    mean = math.fsum(float(p["mean"]) * int(p["count"]) for p in filled) / count
    merged: dict[str, Any] = {"count": count, "mean": round(mean, 3)}
    for key in ("max", "p50", "p90", "p99", "p99.9"):
        merged[key] = max(float(p[key]) for p in filled)
    return merged


class Tally:
    """The run reports of a soak's batches (:func:`loadtest.report.account`), added up.

    The result has the shape of a run report's ``calls``, ``frames``, ``latency_ms``,
    ``billing``, ``per_carrier`` and ``per_call``, so the run's table and objectives
    apply unchanged. Latency percentiles are merged by :func:`merge_summaries`.
    """

    def __init__(self) -> None:
        self.batches = 0
        self.calls = Counter[str]()
        self.refused = Counter[str]()
        self.errors = Counter[str]()
        self.by_carrier = Counter[str]()
        self.frames = Counter[str]()
        self.per_carrier: dict[str, Counter[str]] = {}
        self.latency: dict[str, list[Mapping[str, Any]]] = {k: [] for k in LATENCY_KINDS}
        self.billing: list[Mapping[str, Any]] = []
        self.end_reasons = Counter[str]()
        self.per_call: list[dict[str, Any]] = []

    def add(self, report: Mapping[str, Any]) -> None:
        """Add one batch's run report."""
        self.batches += 1
        calls = report["calls"]
        self.calls.update({k: int(calls[k]) for k in _CALL_COUNTS})
        self.refused.update(calls["refused"])
        self.errors.update(calls["errors"])
        self.by_carrier.update(calls["by_carrier"])
        self.frames.update({k: v for k, v in report["frames"].items() if k != "loss_ratio"})
        for carrier, counts in report["per_carrier"].items():
            self.per_carrier.setdefault(carrier, Counter()).update(counts)
        for kind in LATENCY_KINDS:
            self.latency[kind].append(report["latency_ms"][kind])
        if report["billing"].get("checked"):
            self.billing.append(report["billing"])
            self.end_reasons.update(report["billing"]["end_reasons"])
        self.per_call.extend(report["per_call"])

    def calls_json(self, planned: int) -> dict[str, Any]:
        """The ``calls`` section."""
        return {"planned": planned, **{k: self.calls[k] for k in _CALL_COUNTS}} | {
            "refused": dict(self.refused),
            "errors": dict(self.errors),
            "by_carrier": dict(self.by_carrier),
        }

    def frames_json(self) -> dict[str, Any]:
        """The ``frames`` section, with the loss ratio over all batches."""
        sent, lost = self.frames["sent"], sum(self.frames[k] for k in _LOST)
        return dict(self.frames) | {"loss_ratio": loss_ratio(lost, sent)}

    def latency_json(self) -> dict[str, Any]:
        """The per-call part of ``latency_ms``."""
        return {kind: merge_summaries(parts) for kind, parts in self.latency.items()}

    def billing_json(self) -> dict[str, Any]:
        """The ``billing`` section, and ``missing``: answered calls without a CDR."""
        checked = sum(int(b["checked"]) for b in self.billing)
        merged: dict[str, Any] = {"checked": checked}
        if checked:
            merged |= {
                "mismatched": sum(int(b["mismatched"]) for b in self.billing),
                "at_unit_boundary": sum(int(b.get("at_unit_boundary", 0)) for b in self.billing),
                "unbilled_without_agent": sum(
                    int(b.get("unbilled_without_agent", 0)) for b in self.billing
                ),
                "not_final": sum(int(b["not_final"]) for b in self.billing),
                "audio_minus_sent_ms": merge_summaries(
                    [b["audio_minus_sent_ms"] for b in self.billing]
                ),
                "end_reasons": dict(self.end_reasons),
                "differing": [row for b in self.billing for row in b.get("differing", ())][
                    :DIFFERING_ROWS
                ],
            }
        return merged | {"missing": self.calls["answered"] - checked}

    def per_carrier_json(self) -> dict[str, dict[str, int]]:
        """The ``per_carrier`` section."""
        return {c: dict(v) for c, v in sorted(self.per_carrier.items())}


def soak_objectives(
    report: Mapping[str, Any], limits: Mapping[str, float | None], max_rss_drift: float
) -> list[Objective]:
    """The run's :func:`~loadtest.report.objectives`, then the soak's own two.

    ``max_rss_drift``: the ``soak.rss_drift`` ratio (missed when it was not measured);
    ``max_unbilled`` (0): answered calls whose CDR was not found, so that "billing
    checked for every call" cannot pass by checking none.
    """
    checks = objectives(report, limits)
    drift = report["soak"]["rss_drift"]
    drift_ok = drift is not None and drift <= max_rss_drift
    checks.append(Objective("max_rss_drift", max_rss_drift, drift, drift_ok))
    missing = float(report["billing"]["missing"])
    checks.append(Objective("max_unbilled", 0.0, missing, missing <= 0))
    return checks
