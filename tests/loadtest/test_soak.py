"""Soak logic: recycled plans, warm-up, RSS drift, capacity → calls, batch tallies."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from loadtest.report import BillingRow, account
from loadtest.soak import (
    MIN_CALL_S,
    Tally,
    calls_from_capacity,
    downsample,
    merge_summaries,
    plan_soak,
    rss_drift,
    soak_objectives,
    warmup_for,
)
from loadtest.stats import summarize
from tests.loadtest.test_report import probe_call, raw_run

MIX = {"twilio": 2, "plivo": 1, "vonage": 1}


def live_at(plans: list[tuple[float, float]], t: float) -> int:
    return sum(1 for start, length in plans if start <= t < start + length)


@pytest.mark.parametrize(
    ("duration", "warmup"), [(3600.0, 360.0), (600.0, 60.0), (120.0, 30.0), (40.0, 20.0)]
)
def test_warmup_is_a_tenth_at_least_30_s_at_most_half(duration: float, warmup: float) -> None:
    assert warmup_for(duration) == pytest.approx(warmup)


def test_capacity_report_gives_a_fraction_of_the_highest_clean_level() -> None:
    report = {"levels": [{"calls": 50}, {"calls": 100}], "highest_clean": 100}
    assert calls_from_capacity(report, 0.7) == 70
    assert calls_from_capacity(report | {"highest_clean": 3}, 0.7) == 2  # floor
    assert calls_from_capacity(report, 0.29) == 29  # not 28 by binary rounding
    assert calls_from_capacity(report | {"highest_clean": 1}, 0.5) == 1  # at least one


@pytest.mark.parametrize(
    ("report", "fraction", "match"),
    [
        ({"levels": [], "highest_clean": None}, 0.7, "no clean level"),
        ({"highest_clean": 40}, 0.7, "capacity --json"),
        ({"levels": [], "highest_clean": 40}, 0.0, "fraction"),
        ({"levels": [], "highest_clean": 40}, 1.5, "fraction"),
    ],
)
def test_capacity_reports_without_a_level_are_refused(
    report: dict[str, object], fraction: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        calls_from_capacity(report, fraction)


def test_soak_keeps_the_same_number_of_calls_live_until_the_end() -> None:
    calls, duration, call_s = 8, 100.0, 10.0
    plans = plan_soak(calls, MIX, duration, call_s, ramp=4.0)
    spans = [(p.start_s, p.duration_s) for p in plans]
    ramp_end = (calls - 1) / 4.0
    for tenth in range(int(ramp_end * 10) + 1, int(duration * 10)):
        assert live_at(spans, tenth / 10 + 0.001) == calls
    assert max(p.start_s + p.duration_s for p in plans) == pytest.approx(duration)
    # Recycled: about duration / call_s calls per slot, each call_s long but the first.
    assert len(plans) == pytest.approx(calls * duration / call_s, abs=calls)
    assert [p.index for p in plans] == list(range(len(plans)))
    assert [p.start_s for p in plans] == sorted(p.start_s for p in plans)


def test_soak_staggers_hang_ups_and_keeps_each_slot_on_its_carrier() -> None:
    calls, call_s = 4, 8.0
    plans = plan_soak(calls, MIX, 40.0, call_s, ramp=2.0)
    firsts = plans[:calls]
    ends = sorted(p.start_s + p.duration_s for p in firsts)
    ramp_end = (calls - 1) / 2.0
    assert ends == pytest.approx([ramp_end + (k + 1) * call_s / calls for k in range(calls)])
    assert Counter(p.carrier for p in firsts) == {"twilio": 2, "plivo": 1, "vonage": 1}
    # Each slot's next call starts where its previous one ended, on the same carrier.
    by_end = {round(p.start_s + p.duration_s, 6): p for p in plans}
    for plan in plans[calls:]:
        assert by_end[round(plan.start_s, 6)].carrier == plan.carrier


def test_soak_folds_a_stub_last_call_into_the_previous_one() -> None:
    plans = plan_soak(1, {"twilio": 1}, 10.5, 5.0, ramp=1.0)
    # The first call ends at 5 s; 5-10 s; the 0.5 s left goes to the second call.
    assert [(p.start_s, p.duration_s) for p in plans] == [(0.0, 5.0), (5.0, 5.5)]
    assert all(p.duration_s >= MIN_CALL_S for p in plans)


@pytest.mark.parametrize(
    ("calls", "duration", "call_s", "match"),
    [(0, 60.0, 10.0, "at least 1"), (2, 60.0, 0.5, "call-seconds"), (40, 1.5, 5.0, "duration")],
)
def test_bad_soak_plans_are_refused(calls: int, duration: float, call_s: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_soak(calls, {"twilio": 1}, duration, call_s, ramp=20.0)


def test_drift_compares_medians_after_warm_up_and_at_the_end() -> None:
    mb = 2**20
    samples = [(t * 0.5, 100 * mb) for t in range(40)]  # 0-19.5 s at 100 MB
    samples += [(20 + t * 0.5, 110 * mb) for t in range(40)]  # 20-39.5 s at 110 MB
    samples[77] = (38.5, 500 * mb)  # one wild sample in the end window does not decide
    drift = rss_drift(samples, warmup_s=5.0, end_s=39.5, n=5)
    assert drift is not None
    assert drift.baseline_bytes == 100 * mb
    assert drift.end_bytes == 110 * mb
    assert drift.ratio == pytest.approx(0.10)
    assert drift.baseline_window_s == (5.0, 7.0)
    assert drift.end_window_s == (37.5, 39.5)
    # Samples before the warm-up or after the end are left out; none at all: None.
    assert rss_drift(samples, warmup_s=25.0, end_s=30.0, n=3) is not None
    assert rss_drift(samples, warmup_s=50.0, end_s=60.0) is None


def test_downsample_keeps_first_and_last_and_the_limit() -> None:
    points = list(range(1001))
    picked = downsample(points, limit=100)
    assert len(picked) <= 100
    assert (picked[0], picked[-1]) == (0, 1000)
    assert picked == sorted(picked)
    assert downsample(points[:10], limit=100) == points[:10]


def test_merged_summaries_are_exact_in_count_and_max_and_bound_percentiles() -> None:
    a, b = [1.0, 2.0, 3.0], [10.0, 20.0]
    merged = merge_summaries([summarize(a).as_dict(), summarize(b).as_dict(), {"count": 0}])
    whole = summarize(a + b).as_dict()
    assert merged["count"] == whole["count"] == 5
    assert merged["mean"] == whole["mean"]
    assert merged["max"] == whole["max"]
    for key in ("p50", "p90", "p99", "p99.9"):
        assert merged[key] >= whole[key]  # the worst batch's: an upper bound
    assert merge_summaries([])["count"] == 0


def test_tally_of_batches_adds_up_to_the_whole() -> None:
    calls = [probe_call(i, 100 + 50 * i, lose_outbound=20 * (i == 2)) for i in range(4)]
    rows = [BillingRow(f"c{i}", 2000, 1, 1, 1990, "completed", "caller_hangup") for i in range(4)]
    rows[3] = BillingRow("c3", 2000, 1, 2, 1990, "completed", "caller_hangup")
    whole = account(raw_run([c for c, _ in calls], [r for _, r in calls]), rows)
    tally = Tally()
    for part in (slice(0, 1), slice(1, 4)):
        batch = calls[part]
        tally.add(account(raw_run([c for c, _ in batch], [r for _, r in batch]), rows[part]))
    assert tally.batches == 2
    assert tally.calls_json(planned=4) == whole["calls"]
    assert tally.frames_json() == whole["frames"]
    assert tally.latency_json()["inbound"]["count"] == whole["latency_ms"]["inbound"]["count"]
    billing = tally.billing_json()
    assert (billing["checked"], billing["mismatched"], billing["missing"]) == (4, 1, 0)
    assert [r["call_id"] for r in billing["differing"]] == ["c3"]
    assert tally.per_carrier_json() == whole["per_carrier"]
    assert [r["index"] for r in tally.per_call] == [0, 1, 2, 3]
    json.dumps(billing)


def test_soak_objectives_add_drift_and_unbilled_calls() -> None:
    result, record = probe_call(0, 100)
    report = account(raw_run([result], [record]))
    report["billing"] = {"checked": 0, "missing": 1}
    report["soak"] = {"rss_drift": 0.01}
    checks = {c.name: c for c in soak_objectives(report, {"max_loss": 0.0}, 0.05)}
    assert checks["max_loss"].ok
    assert checks["max_rss_drift"].ok
    assert not checks["max_unbilled"].ok  # answered, no CDR: not checked is not passed
    report["soak"] = {"rss_drift": None}
    (*_, drift, _) = soak_objectives(report, {}, 0.05)
    assert (drift.name, drift.ok) == ("max_rss_drift", False)  # not measured: missed
