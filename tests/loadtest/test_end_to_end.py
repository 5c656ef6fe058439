"""Short end-to-end runs of ``rymi-loadtest`` against a gateway it spawns (CI-sized).

The figures in the report are checked against what these tests compute on their own:
the frames each call must have sent (its planned duration at 20 ms), and the billed
units in the gateway's own SQLite file (read here with ``sqlite3``, not through the
tool) against those frames in 30 s units.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from loadtest.cli import main

pytestmark = pytest.mark.slow

CALLS, RAMP, HOLD = 6, 20.0, 3.0


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
    # The gateway's CDRs, straight from its SQLite file.
    records = cdrs(workdir / "gateway.db")
    assert len(records) == CALLS
    for call in report["per_call"]:
        cdr = records[call["carrier_call_id"]]
        sent_ms = call["frames_sent"] * 20
        assert (cdr["status"], cdr["end_reason"]) == ("completed", "caller_hangup")
        assert cdr["billable_units"] == math.ceil(sent_ms / 30_000)
        assert abs(cdr["audio_ms"] - sent_ms) <= 100  # billed span vs audio sent


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
