"""Percentiles and summaries of measured values, sans I/O.

Percentiles use the *nearest-rank* definition (the smallest value with at least ``q``
percent of the values at or below it): every reported percentile is a value that was
actually measured, and p99.9 of 100 values is the maximum, not an extrapolation. This is
the definition telephony SLOs are usually written against; it differs from numpy's
default linear interpolation on small samples, which is why it is written out here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["PERCENTILES", "Summary", "percentile", "summarize"]

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)
"""The percentiles every latency is reported at."""


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0 < q <= 100) of ascending ``ordered`` values.

    Raises:
        ValueError: no values, or ``q`` out of range.
    """
    if not ordered:
        raise ValueError("expected at least one value")
    if not 0 < q <= 100:
        raise ValueError(f"expected a percentile in (0, 100], got {q}")
    rank = math.ceil(q / 100 * len(ordered))
    return float(ordered[max(rank, 1) - 1])


@dataclass(frozen=True, slots=True)
class Summary:
    """Count, mean, maximum and the :data:`PERCENTILES` of some values (None if none)."""

    count: int
    mean: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None

    def as_dict(self, digits: int = 3) -> dict[str, float | int | None]:
        """JSON-ready, values rounded to ``digits`` decimals."""
        return {
            "count": self.count,
            "mean": _round(self.mean, digits),
            "max": _round(self.max, digits),
            "p50": _round(self.p50, digits),
            "p90": _round(self.p90, digits),
            "p99": _round(self.p99, digits),
            "p99.9": _round(self.p999, digits),
        }


def summarize(values: Iterable[float]) -> Summary:
    """The :class:`Summary` of ``values`` (any order)."""
    ordered = sorted(values)
    if not ordered:
        return Summary(0, None, None, None, None, None, None)
    p50, p90, p99, p999 = (percentile(ordered, q) for q in PERCENTILES)
    return Summary(
        len(ordered), math.fsum(ordered) / len(ordered), ordered[-1], p50, p90, p99, p999
    )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
