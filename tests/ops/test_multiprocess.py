"""Multiprocess mode: any worker's /metrics reports the whole host (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.ops import (
    MULTIPROC_ENV,
    metrics_registries,
    prepare_multiprocess_dir,
    worker_exited,
)
from tests.ops.promtext import Samples, parse, value

_ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, directory: Path, **counts: int) -> None:
        args = [f"--{name}={n}" for name, n in counts.items()]
        env = {**os.environ, MULTIPROC_ENV: str(directory)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.ops.mp_worker", *args],
            cwd=_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def scrape(self) -> Samples:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return parse(response.read().decode())

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=10)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait()
        for pipe in (worker.process.stdin, worker.process.stdout):
            if pipe is not None:
                pipe.close()


def _host_figures(samples: Samples) -> tuple[float, float, float, float]:
    return (
        value(samples, "gateway_calls_active", carrier="twilio"),
        value(samples, "gateway_calls_total", carrier="twilio", outcome="caller_hangup"),
        value(samples, "gateway_call_refusals_total", reason="balance_depleted"),
        value(samples, "gateway_pacing_lateness_seconds_count"),
    )


@pytest.mark.slow
def test_any_worker_reports_the_sum_of_all_workers(tmp_path: Path, workers: list[Worker]) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_99999.db").write_bytes(b"stale file of a previous run")
    prepare_multiprocess_dir(directory)
    assert list(directory.iterdir()) == []

    a = Worker(directory, started=3, ended=1, refused=2)
    workers.append(a)
    b = Worker(directory, started=2, refused=1)
    workers.append(b)

    # active: (3 - 1) + 2; ended: 1; refused: 2 + 1; pacing observations: 1 + 1.
    assert _host_figures(a.scrape()) == (4, 1, 3, 2)
    assert _host_figures(b.scrape()) == (4, 1, 3, 2)

    b.stop()
    # Until the supervisor does its bookkeeping, the dead worker's live calls still count.
    assert _host_figures(a.scrape())[0] == 4
    worker_exited(b.process.pid, directory)
    # Its gauges are gone; its counters and histograms stay (counters never go down).
    assert _host_figures(a.scrape()) == (2, 1, 3, 2)


def test_a_missing_or_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=MULTIPROC_ENV):
        metrics_registries({MULTIPROC_ENV: str(tmp_path / "missing")})


def test_the_variable_set_after_import_is_refused(tmp_path: Path) -> None:
    # This test process imported prometheus-client without the variable: its values
    # live in memory, and a collector over the directory would export nothing of them.
    with pytest.raises(ConfigError, match="after prometheus-client was imported"):
        metrics_registries({MULTIPROC_ENV: str(tmp_path)})


def test_without_the_variable_one_registry_serves_both_roles() -> None:
    registries = metrics_registries({})
    assert registries.metrics is registries.exposition
    assert registries.multiprocess_dir is None


def test_prepare_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    in_the_way = tmp_path / "file"
    in_the_way.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        prepare_multiprocess_dir(in_the_way)
