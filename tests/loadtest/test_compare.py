"""``compare``: variants, their order, per-round figures and spreads; the tester's loop."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from loadtest import loop as tester_loop
from loadtest.compare import (
    Variant,
    aggregate,
    calls_per_core,
    gateway_loop,
    parse_variant,
    parse_variants,
    ratio,
    round_summary,
    schedule,
    spread,
)
from loadtest.compare_run import gateway_code
from loadtest.environment import SPAWN_OWNED, without_our_paths
from loadtest.report import account, objectives
from tests.loadtest.test_report import probe_call, raw_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def python(tmp_path: Path) -> str:
    """An executable file standing for another checkout's interpreter."""
    path = tmp_path / "venv" / "bin" / "python"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_variant_has_a_name_an_interpreter_and_environment(python: str) -> None:
    text = f"before,python={python},RYMI_EVENT_LOOP=asyncio,PYTHONMALLOC=malloc,X=a=b"
    variant = parse_variant(text)
    assert variant == Variant(
        "before",
        python,
        (("RYMI_EVENT_LOOP", "asyncio"), ("PYTHONMALLOC", "malloc"), ("X", "a=b")),
    )
    assert parse_variant("current") == Variant("current")
    assert variant.as_dict()["env"] == {
        "RYMI_EVENT_LOOP": "asyncio",
        "PYTHONMALLOC": "malloc",
        "X": "a=b",
    }


def test_a_venv_interpreter_keeps_its_symlinked_location(tmp_path: Path, python: str) -> None:
    # A venv's bin/python is a link to the base interpreter: resolving it would run the
    # base interpreter, without the venv's packages.
    link = tmp_path / "other" / "bin" / "python"
    link.parent.mkdir(parents=True)
    link.symlink_to(python)
    assert parse_variant(f"a,python={link}").python == str(link)
    relative = os.path.relpath(link)
    assert parse_variant(f"a,python={relative}").python == str(link)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "expected NAME"),
        ("a b", "expected NAME"),
        ("=x", "expected NAME"),
        ("a,RYMI_X", "--variant a: expected KEY=VALUE"),
        ("a,1X=2", "--variant a: '1X' is not an environment variable name"),
        ("a,X-Y=2", "not an environment variable name"),
        ("a,X=1,X=2", "--variant a: X given twice"),
        ("a,RYMI_PORT=9", "--variant a: RYMI_PORT is set by the run itself"),
        ("a,python=/nonexistent/python", "--variant a: python=/nonexistent/python is not an"),
    ],
)
def test_malformed_variants_are_usage_errors_naming_the_option(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_variant(text, reserved=SPAWN_OWNED)


def test_a_python_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "python"
    plain.write_text("")
    with pytest.raises(ValueError, match="is not an executable file"):
        parse_variant(f"a,python={plain}")
    with pytest.raises(ValueError, match="is not an executable file"):
        parse_variant(f"a,python={tmp_path}")  # a directory
    with pytest.raises(ValueError, match="python= given twice"):
        parse_variant(f"a,python={sys.executable},python={sys.executable}")


def test_variants_are_at_least_two_with_unique_names() -> None:
    assert [v.name for v in parse_variants(["a", "b,X=1"])] == ["a", "b"]
    with pytest.raises(ValueError, match="at least two variants, got 1"):
        parse_variants(["a"])
    with pytest.raises(ValueError, match="the name 'a' is given twice"):
        parse_variants(["a,X=1", "b", "a,X=2"])


def test_rounds_interleave_the_variants() -> None:
    a, b, c = Variant("a"), Variant("b"), Variant("c")
    order = [(r, v.name) for r, v in schedule([a, b, c], 2)]
    assert order == [(1, "a"), (1, "b"), (1, "c"), (2, "a"), (2, "b"), (2, "c")]
    with pytest.raises(ValueError, match="--rounds"):
        schedule([a, b], 0)


def test_the_gateway_loop_comes_from_its_log() -> None:
    log = "2026-11-21T08:39:45Z INFO gateway.serve: event loop: uvloop\nlistening\n"
    assert gateway_loop(log) == "uvloop"
    assert gateway_loop("listening on 127.0.0.1\n") is None


def test_a_round_summary_keeps_the_compared_figures_of_a_run_report() -> None:
    calls = [probe_call(0, 250), probe_call(1, 250, lose_outbound=30)]
    report = account(raw_run([c for c, _ in calls], [r for _, r in calls]))
    checks = objectives(report, {"max_loss": 0.0})
    report["objectives"] = [{"name": c.name, "ok": c.ok} for c in checks]
    report["ok"] = all(c.ok for c in checks)
    summary = round_summary(report)
    json.dumps(summary)
    assert summary["cpu_percent"] == report["gateway"]["cpu_percent"] > 0
    assert summary["cpu_percent_per_call"] == report["gateway"]["cpu_percent_per_call"]
    assert summary["inbound_p99_ms"] == pytest.approx(1.0)
    assert summary["outbound_service_p99_ms"] == report["latency_ms"]["outbound_service"]["p99"]
    assert summary["frames_sent"] == 500
    assert summary["frames_lost"] == report["frames"]["lost_outbound"] == 20
    assert summary["calls_completed"] == 2
    assert summary["agent_server_cpu_percent"] is None  # not sampled in this run
    assert summary["host_steal_percent"] is None  # nor the host
    assert summary["ok"] is False


def test_a_round_whose_calls_did_not_all_complete_is_not_ok() -> None:
    """A gateway that answered nothing costs little CPU "per call": that is no result."""
    calls = [probe_call(0, 250), probe_call(1, 250)]
    report = account(raw_run([c for c, _ in calls], [r for _, r in calls]))
    report["ok"] = True  # no objective stated
    assert round_summary(report)["ok"] is True
    calls[1][0].completed = False
    report = account(raw_run([c for c, _ in calls], [r for _, r in calls]))
    report["ok"] = True
    summary = round_summary(report)
    assert (summary["calls_planned"], summary["calls_completed"]) == (2, 1)
    assert summary["calls_complete"] is False
    assert summary["ok"] is False


def summary(
    cpu: float | None, per_call: float | None, lost: int = 0, ok: bool = True
) -> dict[str, object]:
    figures: dict[str, object] = {
        "cpu_percent": cpu,
        "cpu_percent_per_call": per_call,
        "rss_kb_per_call": 100.0,
    }
    figures |= dict.fromkeys(
        (
            "rss_mb_peak",
            "inbound_p50_ms",
            "inbound_p99_ms",
            "outbound_service_p50_ms",
            "outbound_service_p99_ms",
            "outbound_p99_ms",
            "jitter_p99_ms",
            "answer_p99_ms",
            "healthz_p99_ms",
            "tester_lateness_p99_ms",
            "agent_server_cpu_percent",
            "tester_cpu_percent",
            "host_steal_percent",
            "gateway_in_p99_ms",
            "gateway_out_p99_ms",
        )
    )
    return figures | {"frames_lost": lost, "frames_misordered": 0, "calls_failed": 0, "ok": ok}


def test_spreads_are_the_median_min_and_max_of_the_known_values() -> None:
    assert spread([3.0, 1.0, None, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "rounds": 3}
    assert spread([1.0, 2.0])["median"] == 1.5
    assert spread([None]) == {"median": None, "min": None, "max": None, "rounds": 0}


def test_calls_per_core_and_ratio() -> None:
    assert calls_per_core(2.0) == 50.0
    assert calls_per_core(0.8) == 125.0
    assert calls_per_core(None) is None
    assert calls_per_core(0.0) is None
    assert ratio(1.5, 2.0) == 0.75
    assert ratio(1.0, None) is None
    assert ratio(None, 1.0) is None
    assert ratio(1.0, 0.0) is None


def test_aggregate_per_variant_over_rounds_against_the_first() -> None:
    runs = [
        ("before", summary(40.0, 2.0)),
        ("after", summary(30.0, 1.5, lost=1)),
        ("before", summary(44.0, 2.2)),
        ("after", summary(28.0, 1.4, ok=False)),
        ("before", summary(38.0, 1.9)),
        ("after", summary(None, None)),  # a round without CPU samples: left out
    ]
    figures = aggregate(["before", "after"], runs)
    assert list(figures) == ["before", "after"]
    before, after = figures["before"], figures["after"]
    assert before["cpu_percent_per_call"] == {"median": 2.0, "min": 1.9, "max": 2.2, "rounds": 3}
    assert after["cpu_percent_per_call"] == {"median": 1.45, "min": 1.4, "max": 1.5, "rounds": 2}
    assert (before["calls_per_core"], after["calls_per_core"]) == (50.0, 69.0)
    assert (before["cpu_per_call_ratio"], after["cpu_per_call_ratio"]) == (1.0, 0.725)
    assert (before["frames_lost"], after["frames_lost"]) == (0, 1)
    assert (before["rounds"], after["rounds"]) == (3, 3)
    assert (before["ok"], after["ok"]) == (True, False)
    json.dumps(figures)


def test_another_checkouts_interpreter_gets_none_of_our_paths(tmp_path: Path) -> None:
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path), str(REPO / "codecs")]),
        "A": "1",
    }
    assert without_our_paths(env) == {"PYTHONPATH": str(tmp_path), "A": "1"}
    assert without_our_paths({"PYTHONPATH": str(REPO)}) == {}


def test_the_gateway_code_a_variant_runs_is_found(python: str) -> None:
    ours = asyncio.run(gateway_code(Variant("current")))
    assert ours["module"] == str(REPO / "gateway")
    assert ours["ours"] is True
    # An interpreter that cannot import gateway at all (here, not even a Python).
    assert asyncio.run(gateway_code(Variant("x", python)))["module"] is None


def test_the_tester_loop_is_uvloop_unless_asked_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tester_loop.choice({}) == "uvloop"  # a dependency of the project on Linux
    assert tester_loop.choice({tester_loop.ENV: "asyncio"}) == "asyncio"
    with pytest.raises(ValueError, match="RYMI_LOADTEST_LOOP"):
        tester_loop.choice({tester_loop.ENV: "trio"})

    async def which() -> str:
        return tester_loop.running()

    assert tester_loop.run(which()) == "uvloop"
    monkeypatch.setenv(tester_loop.ENV, "asyncio")
    assert tester_loop.run(which()) == "asyncio"
