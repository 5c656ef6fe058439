"""Accounting a run into the JSON report, and the objectives."""

from __future__ import annotations

import io
import json
import time
from array import array
from typing import Any

import pytest
from rich.console import Console

from gateway.server.answer import call_id_for
from loadtest.player import CallPlan, CallResult
from loadtest.procs import ProcSample
from loadtest.render import print_report
from loadtest.report import BillingRow, account, loss_ratio, objectives, process_figures
from loadtest.run import RawRun, RunConfig


def probe_call(
    index: int, frames: int, *, lose_outbound: int = 0
) -> tuple[CallResult, dict[str, Any]]:
    """A Twilio call of ``frames`` frames through a probe agent: 1 ms each way."""
    result = CallResult(CallPlan(index, "twilio", 0.0, frames * 0.02), f"CA{index:032x}")
    result.answer_status, result.answer_ms, result.frame_samples = 200, 5.0 + index, 160
    result.opened_at, result.completed = 100.0, True
    result.sent_at.extend(100.0 + 0.02 * k for k in range(frames))
    result.lateness_ms.extend([0.1] * frames)
    in_at = [t + 0.001 for t in result.sent_at]  # 1 ms to the agent
    out_at = list(in_at)  # the probe answers at once
    result.received_at.extend(t + 0.001 for t in out_at[: frames - lose_outbound])
    result.received_samples.extend([160] * (frames - lose_outbound))
    result.ended_at = result.sent_at[-1] + 0.01
    timing = {
        "start_at": 100.0 - 0.01,
        "in_at": in_at,
        "in_bytes": [640] * frames,
        "out_at": out_at,
        "out_bytes": [640] * frames,
    }
    record = {
        "call_id": call_id_for("twilio", result.carrier_call_id),
        "mode": "echo",
        "timing": timing,
    }
    return result, record


def raw_run(results: list[CallResult], records: list[dict[str, Any]]) -> RawRun:
    raw = RawRun(RunConfig(calls=len(results), mix={"twilio": 1}), results, 99.0, 120.0, 100.0)
    raw.agent_calls = {r["call_id"]: r for r in records}
    raw.probes_ms = [0.5, 0.7, 3.0]
    raw.gateway = [ProcSample(99.0 + i, 0.1 * i, (100 + i) * 2**20) for i in range(20)]
    return raw


def test_report_counts_frames_and_latencies() -> None:
    calls = [probe_call(i, 250) for i in range(3)]
    report = account(raw_run([c for c, _ in calls], [r for _, r in calls]))
    json.dumps(report)  # JSON-ready
    assert report["schema"] == "rymi-loadtest/1"
    assert report["calls"]["answered"] == report["calls"]["completed"] == 3
    frames = report["frames"]
    assert frames["sent"] == frames["received_by_agent"] == 750
    assert frames["lost_inbound"] == frames["lost_outbound"] == 0
    assert frames["loss_ratio"] == 0
    inbound = report["latency_ms"]["inbound"]
    assert inbound["p50"] == inbound["p99"] == pytest.approx(1.0)
    # The first frames (sent before the agent's start + settle) are left out.
    assert inbound["count"] == 3 * (250 - 5)
    assert report["latency_ms"]["outbound"]["p99"] == pytest.approx(1.0)
    assert report["latency_ms"]["answer"]["max"] == 7.0
    assert report["latency_ms"]["healthz_probe"]["p99"] == 3.0
    assert [row["frames_sent"] for row in report["per_call"]] == [250, 250, 250]


def test_steady_latencies_count_only_frames_sent_while_all_calls_were_up() -> None:
    """The ramp ends at 100 s: frames sent before 101 s (set-up still running) took 15 ms.

    The whole run's p99 shows them; the steady figures (101 s to the first hang-up less
    0.5 s) do not, and the report says which window that was.
    """
    calls = [probe_call(i, 250) for i in range(2)]
    for result, record in calls:
        timing = record["timing"]
        delays = [0.015 if t < 101.0 else 0.001 for t in result.sent_at]
        timing["in_at"] = [t + d for t, d in zip(result.sent_at, delays, strict=True)]
        timing["out_at"] = [t + 0.001 for t in result.sent_at]
        _hear(result, [t + d for t, d in zip(timing["out_at"], delays, strict=True)])
    report = account(raw_run([c for c, _ in calls], [r for _, r in calls]))
    latency = report["latency_ms"]
    pairs = (("inbound", "inbound_steady"), ("outbound_service", "outbound_service_steady"))
    for whole, steady in pairs:
        assert latency[whole]["p99"] == pytest.approx(15.0)
        assert latency[steady]["p50"] == latency[steady]["p99"] == pytest.approx(1.0)
    # 101 s to 104.99 s (the first hang-up, at the last frame + 10 ms) less 0.5 s.
    assert report["steady_window_s"] == pytest.approx([2.0, 5.49])
    assert latency["inbound_steady"]["count"] == 2 * 175  # frames sent in 101-104.49 s


def test_lost_outbound_frames_are_counted_before_the_hang_up_only() -> None:
    result, record = probe_call(0, 250, lose_outbound=30)
    report = account(raw_run([result], [record]))
    # 30 never arrived; those sent in the last 200 ms (10 frames) were still in flight.
    assert report["frames"]["lost_outbound"] == 30 - 10
    assert report["frames"]["loss_ratio"] == pytest.approx(20 / 250)


def test_audio_queued_for_playout_at_the_hang_up_is_not_lost() -> None:
    """The probe never pauses: an underrun late in the call adds 0.5 s of delay until the end.

    The call's median delay is still 1 ms; the delay at the end is what decides.
    """
    result, record = probe_call(0, 250)
    out_at = record["timing"]["out_at"]
    # Before frame 150 heard 1 ms after the agent sent it; from frame 150 on, 501 ms.
    heard = [t + (0.001 if k < 150 else 0.501) for k, t in enumerate(out_at)]
    assert result.ended_at is not None
    _hear(result, [t for t in heard if t <= result.ended_at])
    unheard = 250 - len(result.received)
    assert unheard == 25  # the last 0.5 s was still queued when the caller hung up
    report = account(raw_run([result], [record]))
    assert report["frames"]["lost_outbound"] == 0
    # A gateway that stops playing 1.2 s before the hang-up, with no delay built up:
    # of the 60 frames never heard, all but the 200 ms in flight are lost.
    in_time = [t + 0.001 for t in out_at]
    _hear(result, in_time[:-60])
    report = account(raw_run([result], [record]))
    assert report["frames"]["lost_outbound"] == 60 - 10


def test_a_burst_still_playing_out_at_the_hang_up_is_not_lost() -> None:
    """The agent server stalled 0.4 s, then echoed 20 frames at once (soak, 04:21 UTC).

    The gateway plays them in real time, so the caller hangs up 0.38 s behind: the last
    second's median delay (~0.1 s) would count 4 queued frames as lost.
    """
    result, record = probe_call(0, 250)
    out_at = record["timing"]["out_at"]
    burst_at = out_at[219]
    out_at[200:220] = [burst_at] * 20
    heard = [t + 0.001 for t in out_at[:200]]
    heard += [burst_at + 0.001 + 0.02 * (k - 200) for k in range(200, 250)]
    assert result.ended_at is not None
    _hear(result, [t for t in heard if t <= result.ended_at])
    assert len(result.received) == 231  # 19 frames still queued at the hang-up
    report = account(raw_run([result], [record]))
    assert report["frames"]["lost_outbound"] == 0


def test_a_call_row_says_when_it_hung_up_and_how_long_the_carrier_heard_nothing() -> None:
    """A gateway that did not run for the last 0.3 s of a call (a host stall at the
    hang-up): its row says so, to be matched with the gateway's stall watch in its log."""
    result, record = probe_call(0, 250)
    out_at = record["timing"]["out_at"]
    assert result.ended_at is not None
    _hear(result, [t + 0.001 for t in out_at if t + 0.001 <= result.ended_at - 0.3])
    before = time.time() - time.monotonic()
    report = account(raw_run([result], [record]))
    (row,) = report["per_call"]
    assert row["lost_outbound"] == report["frames"]["lost_outbound"] > 0
    assert row["tail_gap_ms"] == pytest.approx(300, abs=20)
    assert row["playout_allowance_ms"] == pytest.approx(1.0)
    assert row["ended_unix"] == pytest.approx(result.ended_at + before, abs=0.01)
    out = io.StringIO()
    print_report(Console(file=out, width=240), report)
    at = time.strftime("%H:%M:%S", time.gmtime(row["ended_unix"]))
    assert (
        f"lost: call {row['call_id']} lost {row['lost_outbound']} agent frames; hung up at "
        f"{at} UTC, {row['tail_gap_ms']:g} ms after the last frame heard"
    ) in out.getvalue()


def test_the_loss_ratio_is_never_rounded_to_zero() -> None:
    assert loss_ratio(3, 15_111_366) == pytest.approx(1.98526e-07)
    assert loss_ratio(0, 15_111_366) == 0.0
    assert loss_ratio(0, 0) == 0.0
    result, record = probe_call(0, 100)
    report = account(raw_run([result], [record]))
    report["frames"]["loss_ratio"] = loss_ratio(3, 15_111_366)  # an hour's soak, 3 lost
    (check,) = objectives(report, {"max_loss": 0.0})
    assert not check.ok


def _hear(result: CallResult, times: list[float]) -> None:
    """The carrier side heard one 20 ms μ-law frame at each of ``times``."""
    result.received_at = array("d", times)
    result.received_samples = array("I", [160] * len(times))


def test_refusals_by_reason_and_billing_rows() -> None:
    refused = CallResult(CallPlan(1, "twilio", 0.0, 1.0), "CA1")
    refused.answer_status, refused.answer_ms, refused.refusal = 200, 3.0, "concurrency_limit"
    ok, record = probe_call(0, 100)
    rows = [BillingRow("c", 2000, 1, 1, 1990, "completed", "caller_hangup")]
    report = account(raw_run([ok, refused], [record]), rows)
    assert report["calls"]["refused"] == {"concurrency_limit": 1}
    assert report["billing"]["mismatched"] == 0
    assert report["billing"]["audio_minus_sent_ms"]["p50"] == -10


def test_a_unit_boundary_within_the_clocks_reach_is_not_a_mismatch() -> None:
    ok, record = probe_call(0, 100)
    row = BillingRow  # (call, sent ms, expected units, billed units, audio ms, status, end)
    rows = [
        # 60 s sent, the hang-up arrived 2 ms after the last frame's slot: 60.002 s → 3.
        row("boundary", 60_000, 2, 3, 60_002, "completed", "caller_hangup", 600_000),
        # The same units off by far more than the clocks can be: a real mismatch.
        row("far", 60_000, 2, 3, 61_000, "completed", "caller_hangup", 600_000),
        # 45 s sent, no boundary near it: any other unit count is a mismatch.
        row("middle", 45_000, 2, 1, 44_990, "completed", "caller_hangup", 600_000),
        row("exact", 45_000, 2, 2, 44_975, "completed", "caller_hangup", 600_000),
    ]
    assert [r.at_unit_boundary for r in rows] == [True, False, False, False]
    billing = account(raw_run([ok], [record]), rows)["billing"]
    assert (billing["mismatched"], billing["at_unit_boundary"]) == (2, 1)
    # Each differing CDR is listed with how it was counted, so a soak's miss is explained.
    listed = {r["call_id"]: r for r in billing["differing"]}
    assert sorted(listed) == ["boundary", "far", "middle"]
    assert listed["boundary"]["counted_as"] == "at_unit_boundary"
    assert listed["far"] | {} == {
        "call_id": "far",
        "counted_as": "mismatched",
        "sent_ms": 60_000,
        "audio_ms": 61_000,
        "expected_units": 2,
        "billed_units": 3,
        "status": "completed",
        "end_reason": "caller_hangup",
    }


def test_a_call_the_agent_never_started_may_bill_nothing() -> None:
    ok, record = probe_call(0, 100)
    row = BillingRow  # (..., status, end, limit ms, agent started)
    rows = [
        # The caller hung up before the agent was up: no audio exchanged, 0 units is right.
        row("no-agent", 6_000, 1, 0, 0, "completed", "caller_hangup", 600_000, False),
        # The agent started, yet nothing was billed: a real mismatch.
        row("started", 6_000, 1, 0, 0, "completed", "caller_hangup", 600_000, True),
        # No agent server to ask (built-in echo): a real mismatch too.
        row("unknown", 6_000, 1, 0, 0, "completed", "caller_hangup", 600_000, None),
        # The agent never started but units were billed: the exception does not cover it.
        row("billed", 6_000, 1, 2, 31_000, "completed", "caller_hangup", 600_000, False),
        # 60 ms sent, never started: within the clocks' reach of 0 as well; counted once.
        row("tiny", 60, 1, 0, 0, "completed", "caller_hangup", 600_000, False),
    ]
    assert [r.unbilled_without_agent for r in rows] == [True, False, False, False, True]
    billing = account(raw_run([ok], [record]), rows)["billing"]
    counts = ("mismatched", "unbilled_without_agent", "at_unit_boundary")
    assert tuple(billing[k] for k in counts) == (3, 1, 1)


def test_process_figures_over_the_window() -> None:
    samples = [ProcSample(float(t), 0.5 * t, (100 + 2 * t) * 2**20) for t in range(11)]
    figures = process_figures(samples, (2.0, 8.0), calls=10)
    assert figures["cpu_percent"] == 50.0
    assert figures["cpu_percent_per_call"] == 5.0
    assert figures["rss_kb_per_call"] == pytest.approx(16 * 1024 / 10)
    assert process_figures(samples[:1], (0, 1), 1) == {"samples": 1}


def test_objectives_pass_and_miss() -> None:
    calls = [probe_call(i, 100) for i in range(2)]
    report = account(raw_run([c for c, _ in calls], [r for _, r in calls]))
    met = objectives(report, {"max_p99_ms": 2.0, "max_loss": 0.0, "max_refusals": None})
    assert [(o.name, o.ok) for o in met] == [("max_p99_ms", True), ("max_loss", True)]
    missed = objectives(report, {"max_p99_ms": 0.5, "max_answer_p99_ms": 1.0})
    assert [o.ok for o in missed] == [False, False]
    with pytest.raises(ValueError, match="unknown objective"):
        objectives(report, {"max_fun": 1.0})


def test_latency_objective_is_missed_when_not_measured() -> None:
    result, _ = probe_call(0, 50)
    report = account(raw_run([result], []))  # built-in echo: no agent timing
    assert report["latency_ms"]["inbound"]["count"] == 0
    (check,) = objectives(report, {"max_p99_ms": 100.0})
    assert check.value is None
    assert not check.ok


def test_capacity_judge_names_every_reason() -> None:
    from loadtest.capacity import Limits, judge

    calls = [probe_call(i, 250) for i in range(2)]
    report = account(raw_run([c for c, _ in calls], [r for _, r in calls]))
    clean = judge(report, Limits())
    assert clean["clean"]
    assert clean["inbound_p99_ms"] == pytest.approx(1.0)
    lossy, record = probe_call(0, 250, lose_outbound=40)
    bad = account(
        raw_run([lossy], [record]), [BillingRow("c", 5000, 1, 2, 5000, "completed", None)]
    )
    reasons = judge(bad, Limits(max_p99_ms=0.5, max_probe_p99_ms=1.0))["reasons"]
    assert reasons == [
        "30 frames lost",
        "1 calls billed other units",
        "inbound p99 1 ms > 0.5",
        "outbound p99 1 ms > 0.5",
        "loop lag (probe p99) 3 ms > 1",
    ]
