"""Nearest-rank percentiles and summaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.stats import percentile, summarize


def test_nearest_rank_on_one_to_a_hundred() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100  # no extrapolation past what was measured
    assert percentile(values, 100) == 100


def test_small_samples_report_measured_values() -> None:
    assert percentile([7.0], 50) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # numpy's linear default says 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0


def test_percentile_refuses_nothing_and_bad_q() -> None:
    with pytest.raises(ValueError, match="at least one"):
        percentile([], 50)
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 0)
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 101)


def test_summary_of_unsorted_values_and_of_none() -> None:
    summary = summarize([3.0, 1.0, 2.0, 10.0])
    assert (summary.count, summary.mean, summary.max) == (4, 4.0, 10.0)
    assert (summary.p50, summary.p90, summary.p99, summary.p999) == (2.0, 10.0, 10.0, 10.0)
    assert summarize([]).as_dict()["p99"] is None
    assert summarize([1.23456]).as_dict(2)["p50"] == 1.23


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_percentiles_are_measured_values_and_monotone(values: list[float]) -> None:
    ordered = sorted(values)
    results = [percentile(ordered, q) for q in (1, 50, 90, 99, 99.9, 100)]
    assert all(r in values for r in results)
    assert results == sorted(results)
    assert results[-1] == max(values)
