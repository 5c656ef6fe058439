"""The gateway's own view of a run: its added-latency histograms between two scrapes.

The tester measures added latency end to end: its send → the agent server's receive, on
the same clock. That includes the kernel's loopback hops and, on a small machine, the
wait for a CPU the tester and the agent server share. The gateway measures the same
frames from the inside (``gateway_added_latency_seconds``, docs/operations.md: from its
read of the carrier message to the hand-over to the agent link, one frame in ten). The
two bracket the truth: the gateway's view leaves out the time a message waited in the
gateway's socket before its loop read it, the tester's adds the apparatus.

``/metrics`` is scraped when the steady window opens and when it closes (every call up,
none being set up or torn down); the difference of the two scrapes' cumulative bucket
counts is the window's histogram. Quantiles are estimated as Prometheus's
``histogram_quantile`` does: linear within the bucket that holds the rank.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Buckets",
    "answer_view",
    "bucket_counts",
    "difference",
    "gateway_view",
    "histogram_quantile",
    "share_within",
]

ADDED_LATENCY = "gateway_added_latency_seconds"
LOOP_LAG = "gateway_event_loop_lag_seconds"
ANSWER = "gateway_answer_seconds"
GOAL_BOUNDS_S = (0.0005, 0.002)
"""The bounds the shares are given for: the issue's p50 and p99 goals (0.5 and 2 ms)."""

Buckets = list[tuple[float, float]]
"""``(le, cumulative count)`` in increasing ``le``, ``+Inf`` last."""


def bucket_counts(text: str, name: str, labels: Mapping[str, str] | None = None) -> Buckets:
    """The cumulative buckets of histogram ``name`` whose labels include ``labels``.

    Series that differ in other labels (a multi-process gateway's, say) are summed.
    """
    wanted = dict(labels or {})
    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            if any(sample.labels.get(k) != v for k, v in wanted.items()):
                continue
            le = float(sample.labels["le"])
            counts[le] = counts.get(le, 0.0) + sample.value
    return sorted(counts.items())


def difference(before: Buckets, after: Buckets) -> Buckets:
    """``after - before`` bucket by bucket (a bucket missing before counts 0 there)."""
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]


def histogram_quantile(buckets: Buckets, q: float) -> float | None:
    """The ``q`` quantile, as Prometheus estimates it; None without observations.

    Linear interpolation inside the bucket holding rank ``q * count``, from the previous
    bound (0 for the first bucket). A rank in the ``+Inf`` bucket gives the highest
    finite bound: the histogram cannot say more.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(le):
                return lower
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, cumulative
    return lower


def share_within(buckets: Buckets, bound: float) -> float | None:
    """The share of observations at or under ``bound``, which must be a bucket's bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    for le, cumulative in buckets:
        if le == bound:
            return cumulative / buckets[-1][1]
    raise ValueError(f"{bound:g} s is not a bucket bound of this histogram")


def _quantiles(buckets: Buckets) -> dict[str, Any]:
    """How many were observed, and p50, p90 and p99 in milliseconds (None if none)."""
    out: dict[str, Any] = {"observed": int(buckets[-1][1]) if buckets else 0}
    for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        value = histogram_quantile(buckets, q)
        out[f"{label}_ms"] = None if value is None else round(value * 1000, 3)
    return out


def _summary(buckets: Buckets) -> dict[str, Any]:
    out = _quantiles(buckets)
    known = {le for le, _ in buckets}
    for bound in GOAL_BOUNDS_S:
        share = share_within(buckets, bound) if bound in known else None
        out[f"within_{bound * 1000:g}_ms"] = None if share is None else round(share, 5)
    return out


def gateway_view(before: str, after: str, window_s: Sequence[float]) -> dict[str, Any]:
    """The gateway's added latency per direction and its loop lag between two scrapes."""
    view: dict[str, Any] = {"window_s": [round(t, 3) for t in window_s]}
    for direction in ("in", "out"):
        labels = {"direction": direction}
        buckets = difference(
            bucket_counts(before, ADDED_LATENCY, labels),
            bucket_counts(after, ADDED_LATENCY, labels),
        )
        view[f"added_{direction}"] = _summary(buckets)
    lag = difference(bucket_counts(before, LOOP_LAG), bucket_counts(after, LOOP_LAG))
    view["loop_lag"] = _summary(lag)
    return view


def answer_view(before: str, after: str) -> dict[str, Any]:
    """The gateway's time to answer the calls it answered between two scrapes (the run's).

    Answers happen during the ramp and the churn, not in the steady window, so the
    scrapes are the run's first and last (``gateway_answer_seconds``, outcome
    ``answered``, every carrier).
    """
    labels = {"outcome": "answered"}
    buckets = difference(
        bucket_counts(before, ANSWER, labels), bucket_counts(after, ANSWER, labels)
    )
    return _quantiles(buckets)
