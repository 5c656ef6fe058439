"""Short end-to-end runs of ``rymi-loadtest`` against a gateway it spawns (CI-sized).

The figures in the report are checked against what these tests compute on their own:
the frames each call must have sent (its planned duration at 20 ms), and the billed
units in the gateway's own SQLite file (read here with ``sqlite3``, not through the
tool) against those frames in 30 s units.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import ANSWER_BUCKETS
from loadtest.cli import main
from loadtest.wire_capture import check_permission

pytestmark = pytest.mark.slow

CALLS, RAMP, HOLD = 6, 20.0, 3.0
SLOTS, SOAK_S, CALL_S = 3, 8.0, 3.0


def run_cli(*argv: str) -> int:
    return main(["--quiet", *argv] if argv[0].startswith("-") else [argv[0], "--quiet", *argv[1:]])


def cdrs(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT carrier_call_id, carrier, status, end_reason, audio_ms, billable_units"
            " FROM calls"
        ).fetchall()
    return {row["carrier_call_id"]: dict(row) for row in rows}


def test_builtin_echo_run_matches_what_was_sent_and_billed(tmp_path: Path) -> None:
    report_path, workdir = tmp_path / "report.json", tmp_path / "gw"
    code = run_cli(
        "run", "--calls", str(CALLS), "--mix", "twilio,plivo,vonage", "--ramp", str(RAMP),
        "--hold", str(HOLD), "--json", str(report_path), "--workdir", str(workdir),
        "--max-failed", "0", "--max-refusals", "0", "--max-billing-mismatches", "0",
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    assert code == 0, report["objectives"]
    assert report["calls"]["completed"] == CALLS
    assert report["calls"]["by_carrier"] == {"twilio": 2, "plivo": 2, "vonage": 2}
    # Every call talked from its start to the end of the hold, one frame per 20 ms.
    ramp_end = (CALLS - 1) / RAMP
    expected = [math.ceil((ramp_end - i / RAMP + HOLD) / 0.02) for i in range(CALLS)]
    assert [c["frames_sent"] for c in report["per_call"]] == expected
    assert report["frames"]["sent"] == sum(expected)
    assert report["latency_ms"]["tester_lateness"]["count"] == sum(expected)
    assert report["latency_ms"]["answer"]["count"] == CALLS
    assert report["gateway"]["cpu_percent"] > 0
    host = report["host"]  # the host's own share: steal over the window, speed around it
    assert 0 <= host["steal_percent"] <= 100
    assert 0 < host["busy_percent"] <= 100
    assert all(ms > 0 for ms in host["speed_probe_ms"])
    # The gateway's CDRs, straight from its SQLite file.
    records = cdrs(workdir / "gateway.db")
    assert len(records) == CALLS
    for call in report["per_call"]:
        cdr = records[call["carrier_call_id"]]
        sent_ms = call["frames_sent"] * 20
        assert (cdr["status"], cdr["end_reason"]) == ("completed", "caller_hangup")
        assert cdr["billable_units"] == math.ceil(sent_ms / 30_000)
        assert abs(cdr["audio_ms"] - sent_ms) <= 100  # billed span vs audio sent


def test_soak_recycles_calls_bills_each_one_and_measures_drift(tmp_path: Path) -> None:
    report_path, workdir = tmp_path / "soak.json", tmp_path / "gw"
    allowed = sorted(os.sched_getaffinity(0))
    code = run_cli(
        "soak", "--calls", str(SLOTS), "--duration", str(SOAK_S), "--call-seconds", str(CALL_S),
        "--mix", "twilio,plivo,vonage", "--ramp", str(RAMP), "--batch-seconds", "3",
        "--max-rss-drift", "1",
        "--gateway-cpus", str(allowed[0]), "--tester-cpus", str(allowed[-1]),
        "--json", str(report_path), "--workdir", str(workdir),
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    assert code == 0, report["objectives"]
    rows = sorted(report["per_call"], key=lambda c: c["index"])
    # Recycled: more calls than slots; one slot per carrier here, each talking back to
    # back from its start on the ramp to the end, every call its planned length at one
    # frame per 20 ms.
    assert len(rows) >= 2 * SLOTS
    assert report["calls"]["completed"] == report["calls"]["planned"] == len(rows)
    talked: dict[str, float] = defaultdict(float)
    for row in rows:
        assert row["frames_sent"] == math.ceil(row["planned_s"] / 0.02)
        talked[row["carrier"]] += row["planned_s"]
    slots = ("twilio", "plivo", "vonage")
    assert talked == pytest.approx({c: SOAK_S - k / RAMP for k, c in enumerate(slots)})
    assert report["frames"]["sent"] == sum(row["frames_sent"] for row in rows)
    # Every call's CDR, straight from the gateway's SQLite file.
    records = cdrs(workdir / "gateway.db")
    assert len(records) == len(rows)
    for row in rows:
        cdr = records[row["carrier_call_id"]]
        assert (cdr["status"], cdr["end_reason"]) == ("completed", "caller_hangup")
        assert cdr["billable_units"] == math.ceil(row["frames_sent"] * 20 / 30_000)
    billing = report["billing"]
    assert (billing["checked"], billing["mismatched"], billing["missing"]) == (len(rows), 0, 0)
    # The gateway timed each of the soak's answers (its /metrics, before and after).
    assert report["gateway_answers"]["observed"] == len(rows)
    # The drift, recomputed from the samples in the report (all kept: a short soak).
    soak = report["soak"]
    assert soak["warmup_s"] == SOAK_S / 2  # the rule's upper bound: half a short soak
    assert len(soak["samples"]) == soak["samples_taken"] > 10
    after = [rss for t, rss in soak["samples"] if soak["warmup_s"] <= t <= SOAK_S]
    baseline, end = statistics.median(after[:5]), statistics.median(after[-5:])
    assert soak["rss_mb_baseline"] == pytest.approx(baseline, abs=0.01)
    assert soak["rss_drift"] == pytest.approx((end - baseline) / baseline, abs=1e-3)
    # Shorter than a minute: the host's steal series is its one tail point.
    ((ended_at, steal),) = soak["host_steal_by_minute"]
    assert 0 < ended_at <= SOAK_S + 30
    assert 0 <= steal <= 100
    # Pinned as asked, and this process given its CPUs back.
    observed = report["machine"]["affinity"]["observed"]
    assert (observed["gateway"], observed["tester"]) == (str(allowed[0]), str(allowed[-1]))
    assert sorted(os.sched_getaffinity(0)) == allowed


def test_external_probe_agent_measures_both_legs_with_nothing_lost(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    code = run_cli(
        "run", "--calls", "3", "--mix", "twilio,plivo,vonage", "--hold", "2.5",
        "--agent", "external", "--json", str(report_path),
        "--max-loss", "0", "--max-misordered", "0", "--max-failed", "0",
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    assert code == 0, report["objectives"]
    frames, latency = report["frames"], report["latency_ms"]
    assert frames["received_by_agent"] == frames["sent"]
    assert frames["lost_inbound"] == frames["lost_outbound"] == 0
    assert frames["content_checked"] > 100  # the fixture's speech came back, identified
    assert frames["content_in_place"] == frames["content_checked"]
    # Each leg was timed for nearly every frame (all but the agent-connect settle).
    assert latency["inbound"]["count"] > 0.8 * frames["sent"]
    assert latency["outbound"]["count"] > 0.8 * frames["sent"]
    assert latency["agent_connect"]["count"] == 3
    assert report["agent_server"]["cpu_percent"] is not None
    # The gateway's own histograms over the steady window (1.1-2.1 s): 3 calls' caller
    # frames, one in ten observed, each a fraction of the end-to-end figure.
    view = report["gateway_view"]["added_in"]
    assert 3 * 50 / 10 * 0.8 <= view["observed"] <= 3 * 50 * 1.2 / 10 + 3
    assert 0 < view["p50_ms"] <= latency["inbound"]["max"]
    # Its answer time over the whole run: each of the 3 calls, inside the tester's figure
    # (up to the bucket bound above it: the quantile is interpolated within a bucket).
    answers = report["gateway_answers"]
    assert answers["observed"] == 3
    bound_s = min(b for b in ANSWER_BUCKETS if b * 1000 >= latency["answer"]["max"])
    assert 0 < answers["p50_ms"] <= bound_s * 1000


def test_compare_runs_each_variant_with_its_own_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "compare.json"
    code = run_cli(
        "compare",
        "--variant", "std,RYMI_EVENT_LOOP=asyncio", "--variant", "uv,RYMI_EVENT_LOOP=uvloop",
        "--calls", "2", "--hold", "3", "--rounds", "1", "--json", str(report_path),
        "--max-failed", "0", "--max-loss", "0",
    )  # fmt: skip
    doc = json.loads(report_path.read_text())
    assert code == 0, doc["aggregate"]
    assert [v["name"] for v in doc["variants"]] == ["std", "uv"]
    assert doc["order"] == [[1, "std"], [1, "uv"]]
    # Each variant's setting reached its gateway only: each logged the loop it was given.
    assert [(r["variant"], r["gateway_loop"]) for r in doc["runs"]] == [
        ("std", "asyncio"),
        ("uv", "uvloop"),
    ]
    for run in doc["runs"]:
        assert run["summary"]["calls_completed"] == 2
        assert run["summary"]["cpu_percent"] > 0
    for name in ("std", "uv"):
        row = doc["aggregate"][name]
        assert row["cpu_percent"]["median"] > 0
        assert row["frames_lost"] == 0
        assert row["calls_per_core"] == pytest.approx(
            100 / row["cpu_percent_per_call"]["median"], abs=0.1
        )
    assert doc["aggregate"]["std"]["cpu_per_call_ratio"] == 1.0
    assert doc["machine"]["tester_loop"] == "uvloop"
    # The table: one row per variant, in order.
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│ ")]
    assert [row.split("│")[1].strip() for row in rows] == ["std", "uv"]


def test_malformed_frames_close_bad_sockets_and_spare_healthy_calls(tmp_path: Path) -> None:
    report_path = tmp_path / "fault.json"
    code = run_cli(
        "fault", "malformed", "--healthy", "3", "--bad", "14", "--hold", "3",
        "--json", str(report_path),
    )  # fmt: skip
    result = json.loads(report_path.read_text())
    assert code == 0, result["by_kind"]
    assert set(result["by_kind"]) == {
        "bad_json",
        "oversized",
        "invalid_utf8",
        "binary",
        "out_of_order",
    }
    assert sum(row["sent"] for row in result["by_kind"].values()) == 14
    assert result["healthy"]["calls"]["completed"] == 3


def test_unsafe_targets_and_bad_usage_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("run", "--target", "http://10.1.2.3:8080", "--calls", "1") == 2
    assert "--allow-target" in capsys.readouterr().out
    assert run_cli("run", "--mix", "skype=3") == 2
    assert run_cli("capacity", "--levels", "10,x") == 2
    assert run_cli("compare", "--variant", "only-one") == 2
    assert "at least two variants" in capsys.readouterr().out
    # An interpreter that cannot import a gateway is refused before anything is spawned.
    true = shutil.which("true")
    assert true is not None
    assert run_cli("compare", "--variant", f"old,python={true}", "--variant", "new") == 2
    assert "--variant old: python=" in capsys.readouterr().out


@pytest.mark.skipif(check_permission() is not None, reason="--wire needs CAP_NET_RAW (root)")
def test_wire_capture_times_the_gateway_by_kernel_stamps(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    code = run_cli(
        "run", "--calls", "3", "--mix", "twilio,plivo,vonage", "--hold", "2.5",
        "--agent", "external", "--wire", "1", "--json", str(report_path),
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    assert code == 0
    wire = report["wire"]
    assert (wire["calls_paired"], wire["calls_unpaired"]) == (3, 0)
    assert wire["capture"]["dropped"] == 0
    # What was captured (the steady window is ~1 s: less the capture's start-up) of 3
    # calls' caller frames, each paired with the gateway's frame to its agent.
    assert 0.5 <= wire["seconds"] <= 1
    assert 3 * 50 * wire["seconds"] * 0.8 <= wire["in"]["count"] <= 3 * 50 * wire["seconds"] * 1.2
    # Each frame's time on the wire lies inside its end-to-end time (the tester's send to
    # the agent server's read), so no wire figure exceeds the largest end-to-end one.
    assert 0 < wire["in"]["p50"] <= wire["in"]["max"] <= report["latency_ms"]["inbound"]["max"]
    # Beside it, the tester's figure of the frames sent in the same seconds: each of the
    # same frames, so as many, and each at least its time on the wire.
    same = wire["end_to_end_in"]
    assert abs(same["count"] - wire["in"]["count"]) <= 6
    assert wire["in"]["max"] <= same["max"]
