"""The host's steal and speed: /proc/stat parsed, figures over the run's window."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from loadtest.capacity import Limits, judge
from loadtest.host import (
    CpuTicks,
    HostSample,
    host_figures,
    parse_proc_stat,
    read_host,
    steal_series,
)
from loadtest.render import print_report
from loadtest.report import account
from tests.loadtest.test_report import probe_call, raw_run

# A 2-CPU guest's /proc/stat (proc(5)): user nice system idle iowait irq softirq steal
# guest guest_nice; only the cpu lines matter.
STAT = """\
cpu  1000 10 300 5000 40 0 50 600 0 0
cpu0 500 5 150 2500 20 0 25 100 0 0
cpu1 500 5 150 2500 20 0 25 500 0 0
intr 123456 0 9 0
ctxt 987654
btime 1763770000
"""


def test_proc_stat_lines_give_each_cpus_total_idle_and_steal() -> None:
    cpus = parse_proc_stat(STAT)
    assert list(cpus) == ["all", "0", "1"]
    assert cpus["0"] == CpuTicks(
        total=500 + 5 + 150 + 2500 + 20 + 0 + 25 + 100, idle=2520, steal=100
    )
    assert cpus["all"].steal == 600


def test_a_kernel_without_steal_counts_none() -> None:
    assert parse_proc_stat("cpu  10 0 5 100\n")["all"] == CpuTicks(total=115, idle=100, steal=0)


def test_steal_and_busy_per_cpu_over_the_window() -> None:
    # Over the window each CPU counts 100 ticks: cpu0 60 busy, 30 idle, 10 stolen; cpu1 60
    # busy, 40 stolen. The sample after the window (everything stolen) does not count.
    before = HostSample(10.0, {"0": CpuTicks(1000, 500, 100), "1": CpuTicks(1000, 500, 100)})
    after = HostSample(12.0, {"0": CpuTicks(1100, 530, 110), "1": CpuTicks(1100, 500, 140)})
    outside = HostSample(20.0, {"0": CpuTicks(1900, 530, 910), "1": CpuTicks(1900, 500, 940)})
    figures = host_figures([before, after, outside], (9.0, 13.0))
    assert figures["steal_percent_by_cpu"] == {"0": 10.0, "1": 40.0}
    assert figures["busy_percent_by_cpu"] == {"0": 60.0, "1": 60.0}
    assert figures["window_s"] == 2.0
    assert figures["samples"] == 3


def test_the_steal_series_has_one_point_per_step_and_the_tail() -> None:
    def at(t: float, total: int, steal: int) -> HostSample:
        return HostSample(t, {"all": CpuTicks(total, 0, steal)})

    # 100 ticks a second; 10 stolen a second for the first minute, 50 in the second.
    samples = [at(float(t), 100 * t, 10 * t) for t in range(0, 61, 30)]
    samples += [at(60.0 + t, 6000 + 100 * t, 600 + 50 * t) for t in range(30, 91, 30)]
    assert steal_series(samples, origin=0.0) == [[60.0, 10.0], [120.0, 50.0], [150.0, 50.0]]
    assert steal_series([], origin=0.0) == []


def test_too_few_samples_give_no_figures() -> None:
    assert host_figures([], (0.0, 1.0)) == {"samples": 0}
    one = HostSample(1.0, parse_proc_stat(STAT))
    assert host_figures([one], (0.0, 2.0)) == {"samples": 1}


def test_this_machine_reads_and_a_missing_file_is_none(tmp_path: Path) -> None:
    sample = read_host()
    assert sample is not None
    assert "all" in sample.cpus
    assert sample.cpus["all"].total > 0
    assert read_host(tmp_path / "no-such-stat") is None


def stolen_report(percent: float) -> dict[str, Any]:
    calls = [probe_call(i, 250) for i in range(2)]
    raw = raw_run([c for c, _ in calls], [r for _, r in calls])
    ticks = int(percent)
    raw.host = [
        HostSample(99.0, {"all": CpuTicks(1000, 500, 0), "1": CpuTicks(500, 250, 0)}),
        HostSample(119.0, {"all": CpuTicks(1100, 550, ticks), "1": CpuTicks(600, 300, 50)}),
    ]
    raw.speed_probe_ms = (20.5, 41.0)
    return account(raw)


def test_the_report_says_how_much_the_host_stole_and_how_fast_it_was() -> None:
    report = stolen_report(38)
    host = report["host"]
    assert (host["steal_percent"], host["speed_probe_ms"]) == (38.0, (20.5, 41.0))
    out = io.StringIO()
    print_report(Console(file=out, width=200), report)
    assert "host: steal 38.0% (cpu1 50.0%) over 20.0 s, speed probe 20.5 → 41 ms" in out.getvalue()


@pytest.mark.parametrize(("percent", "clean"), [(5, True), (6, False)])
def test_a_level_the_host_stole_from_is_not_clean(percent: int, clean: bool) -> None:
    level = judge(stolen_report(percent), Limits(max_steal_percent=5.0))
    assert level["steal_percent"] == percent
    assert level["speed_probe_ms"] == (20.5, 41.0)  # the host's speed, kept with the level
    assert level["clean"] is clean
    assert level["reasons"] == ([] if clean else [f"host busy (steal {percent:g} % > 5)"])
