"""CPU lists, their checks, and pinning that spawned processes inherit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from loadtest.affinity import (
    Pinning,
    format_cpus,
    observed,
    parse_cpus,
    thread_pinned,
)
from loadtest.cli import main
from loadtest.procs import Spawned
from loadtest.workers import worker_pool

EIGHT = range(8)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", {0}), ("0,1", {0, 1}), ("1-3", {1, 2, 3}), (" 0-1 , 5", {0, 1, 5}), ("2,2", {2})],
)
def test_cpu_lists(text: str, cpus: set[int]) -> None:
    assert parse_cpus(text, "--gateway-cpus", EIGHT) == cpus


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "expected a CPU list"),
        ("one", "expected a CPU list"),
        ("0,,1", "expected a CPU list"),
        ("3-1", "ascending"),
        ("-1", "expected a CPU list"),
    ],
)
def test_bad_cpu_lists_name_the_option(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as caught:
        parse_cpus(text, "--agent-cpus", EIGHT)
    assert str(caught.value).startswith("--agent-cpus: ")


def test_cpus_outside_the_allowed_set_name_the_allowed_ones() -> None:
    message = "--tester-cpus: CPU 4-5 not available; this process may use CPUs 0-3"
    with pytest.raises(ValueError, match=f"^{message}$"):
        parse_cpus("2-5", "--tester-cpus", {0, 1, 2, 3})


def test_format_cpus_is_the_short_list() -> None:
    assert format_cpus({5, 0, 1, 2, 7, 8}) == "0-2,5,7-8"
    assert format_cpus([3]) == "3"
    assert parse_cpus(format_cpus({0, 2, 3, 4}), "--x", EIGHT) == {0, 2, 3, 4}


def test_children_get_their_cpus_or_the_allowed_ones_when_the_tester_is_pinned() -> None:
    free = Pinning.from_options(EIGHT, gateway="0-1")
    assert free.for_child(free.gateway) == frozenset({0, 1})
    assert free.for_child(free.agent) is None
    assert not Pinning.from_options(EIGHT).pinned
    tester = Pinning.from_options(EIGHT, gateway="0", tester="7")
    assert tester.for_child(tester.agent) == frozenset(EIGHT)  # not the tester's CPU
    assert tester.as_dict() == {"allowed": "0-7", "gateway": "0", "agent": None, "tester": "7"}


def test_a_spawned_child_runs_on_its_cpus_and_this_thread_is_restored(tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    one = frozenset({min(before)})
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    with Spawned(argv, dict(os.environ), tmp_path / "child.log", grace_s=1, cpus=one) as child:
        assert os.sched_getaffinity(child.pid) == one
        assert observed(child.pid) == str(min(before))
    assert os.sched_getaffinity(0) == before
    with thread_pinned(None):
        assert os.sched_getaffinity(0) == before
    assert observed(None) is None


def test_tester_workers_run_on_the_tester_cpus() -> None:
    one = frozenset({max(os.sched_getaffinity(0))})
    with worker_pool(1, one) as pool:
        assert pool.submit(os.sched_getaffinity, 0).result(timeout=60) == one


def test_cpu_options_are_checked_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    allowed = format_cpus(os.sched_getaffinity(0))
    assert main(["run", "--quiet", "--gateway-cpus", "4096"]) == 2
    out = capsys.readouterr().out
    assert "--gateway-cpus: CPU 4096 not available" in out
    assert f"may use CPUs {allowed}" in out
    assert main(["soak", "--quiet", "--agent-cpus", "0"]) == 2  # no agent server to pin
    assert "--agent external" in capsys.readouterr().out
    target = ["--target", "http://127.0.0.1:9", "--gateway-cpus", "0"]
    assert main(["capacity", "--quiet", *target]) == 2
    assert "not with --target" in capsys.readouterr().out
