"""The gateway's own view: its histograms, scraped twice, differenced and read as quantiles."""

from __future__ import annotations

import io

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from gateway.metrics import GatewayMetrics
from loadtest.gateway_view import (
    answer_view,
    bucket_counts,
    difference,
    gateway_view,
    histogram_quantile,
    share_within,
)
from loadtest.render import print_report
from loadtest.report import account
from tests.loadtest.test_report import probe_call, raw_run

INF = float("inf")


def exposition(metrics: GatewayMetrics) -> str:
    """What ``/metrics`` serves for ``metrics`` now."""
    return generate_latest(metrics.registry).decode()


def test_quantiles_interpolate_inside_the_bucket_holding_the_rank() -> None:
    # 100 observations: 50 in (0, 1], 40 in (1, 2], 10 in (2, 4].
    buckets = [(1.0, 50.0), (2.0, 90.0), (4.0, 100.0), (INF, 100.0)]
    assert histogram_quantile(buckets, 0.5) == 1.0
    assert histogram_quantile(buckets, 0.25) == 0.5
    assert histogram_quantile(buckets, 0.7) == pytest.approx(1.5)
    assert histogram_quantile(buckets, 0.95) == pytest.approx(3.0)
    assert share_within(buckets, 2.0) == 0.9
    with pytest.raises(ValueError, match="not a bucket bound"):
        share_within(buckets, 3.0)


def test_a_rank_beyond_the_last_bound_gives_that_bound_and_nothing_gives_none() -> None:
    assert histogram_quantile([(1.0, 1.0), (INF, 10.0)], 0.99) == 1.0
    assert histogram_quantile([(1.0, 0.0), (INF, 0.0)], 0.5) is None
    assert histogram_quantile([], 0.5) is None
    assert share_within([(1.0, 0.0), (INF, 0.0)], 1.0) is None


def test_the_window_is_the_difference_of_two_real_scrapes() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    for _ in range(7):  # before the window: left out
        metrics.observe_added_latency("in", 0.030)
    before = exposition(metrics)
    for seconds in (0.0003,) * 60 + (0.0015,) * 39 + (0.004,):
        metrics.observe_added_latency("in", seconds)
    metrics.observe_added_latency("out", 0.0008)
    metrics.observe_loop_lag(0.003)
    view = gateway_view(before, exposition(metrics), (11.0, 31.0))
    added_in = view["added_in"]
    assert added_in["observed"] == 100
    assert (added_in["within_0.5_ms"], added_in["within_2_ms"]) == (0.6, 0.99)
    assert 0.25 < added_in["p50_ms"] <= 0.5  # inside the (0.25, 0.5] ms bucket
    assert 1.0 < added_in["p90_ms"] <= 2.0
    assert view["added_out"]["observed"] == 1
    assert view["loop_lag"]["observed"] == 1
    assert view["loop_lag"]["within_2_ms"] is None  # not a bound of the loop-lag buckets
    assert view["window_s"] == [11.0, 31.0]


def test_series_of_other_labels_are_summed_and_a_missing_bucket_counts_zero() -> None:
    text = (
        "# TYPE h histogram\n"
        'h_bucket{direction="in",worker="1",le="1.0"} 2\n'
        'h_bucket{direction="in",worker="2",le="1.0"} 3\n'
        'h_bucket{direction="in",worker="1",le="+Inf"} 4\n'
        'h_bucket{direction="in",worker="2",le="+Inf"} 3\n'
        'h_bucket{direction="out",worker="1",le="+Inf"} 9\n'
        'h_count{direction="in",worker="1"} 4\n'
    )
    buckets = bucket_counts(text, "h", {"direction": "in"})
    assert buckets == [(1.0, 5.0), (INF, 7.0)]
    assert difference([(INF, 2.0)], buckets) == [(1.0, 5.0), (INF, 5.0)]


def test_the_report_and_its_table_carry_the_gateways_view() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    before = exposition(metrics)
    for _ in range(10):
        metrics.observe_added_latency("in", 0.0004)
    calls = [probe_call(i, 100) for i in range(2)]
    raw = raw_run([c for c, _ in calls], [r for _, r in calls])
    raw.metrics_scrapes = [(101.0, before), (103.0, exposition(metrics))]
    report = account(raw)
    assert report["gateway_view"]["added_in"]["within_0.5_ms"] == 1.0
    assert report["gateway_view"]["window_s"] == [2.0, 4.0]  # from the run's start (99 s)
    out = io.StringIO()
    print_report(Console(file=out, width=240), report)
    assert "gateway's own view, all calls up: in p50 0.375 / p99 0.497 ms (100.0% ≤ 0.5 ms" in (
        out.getvalue()
    )
    raw.metrics_scrapes = raw.metrics_scrapes[:1]  # the second scrape failed: no view
    assert account(raw)["gateway_view"] is None


def test_the_answer_view_counts_the_runs_answers_of_every_carrier_and_only_answered() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    metrics.answered("twilio", "answered", 0.5)  # before the run: left out
    before = exposition(metrics)
    for seconds in (0.003,) * 90 + (0.02,) * 9:
        metrics.answered("twilio", "answered", seconds)
    metrics.answered("vonage", "answered", 0.2)
    metrics.answered("twilio", "refused", 2.0)  # a refusal is not an answer's time
    view = answer_view(before, exposition(metrics))
    assert view["observed"] == 100
    assert 2.5 < view["p50_ms"] <= 5.0  # inside the (2.5, 5] ms bucket
    assert 10.0 < view["p99_ms"] <= 25.0
    calls = [probe_call(i, 100) for i in range(2)]
    raw = raw_run([c for c, _ in calls], [r for _, r in calls])
    raw.run_scrapes = [before, exposition(metrics)]
    report = account(raw)
    assert report["gateway_answers"] == view
    out = io.StringIO()
    print_report(Console(file=out, width=240), report)
    assert "gateway's own answer time: p50 " in out.getvalue()
    assert "ms of 100 calls answered" in out.getvalue()
    raw.run_scrapes = raw.run_scrapes[:1]  # the last scrape failed: no view
    assert account(raw)["gateway_answers"] is None
