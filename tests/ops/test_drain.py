"""Drain on SIGTERM and the multi-worker supervisor: in-process and with real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.ops.drain import Drain, DrainPhase
from gateway.ops.supervisor import check_workers
from tests.helpers.redis_server import free_port
from tests.ops.promtext import parse, value

_ROOT = Path(__file__).resolve().parents[2]

# -- Drain alone ------------------------------------------------------------------------


class FakeCalls:
    """Calls as asyncio events: each ends when the test (or a hang-up) says so."""

    def __init__(self, count: int) -> None:
        self.live = set(range(count))
        self.empty = asyncio.Event()
        self.hung_up = 0
        self.stuck = False

    def end(self, call: int) -> None:
        self.live.discard(call)
        if not self.live:
            self.empty.set()

    def hang_up_all(self) -> None:
        self.hung_up += 1
        if not self.stuck:
            for call in list(self.live):
                asyncio.get_running_loop().call_soon(self.end, call)

    def drain(self, **options: float | None) -> tuple[Drain, list[bool]]:
        flags: list[bool] = []
        drain = Drain(
            live_calls=lambda: len(self.live),
            wait_empty=self.empty.wait,
            hang_up_all=self.hang_up_all,
            on_draining=flags.append,
            **options,  # type: ignore[arg-type]
        )
        return drain, flags


async def test_live_calls_run_to_their_end_after_the_first_signal() -> None:
    calls = FakeCalls(2)
    drain, flags = calls.drain()
    runner = asyncio.create_task(drain.run())
    await asyncio.sleep(0)
    assert (drain.phase, drain.draining, flags) == (DrainPhase.SERVING, False, [])
    drain.request()
    assert (drain.draining, flags) == (True, [True])  # readiness flips at once
    calls.end(0)
    await asyncio.sleep(0.01)
    assert not runner.done()  # one call still live: keep waiting
    calls.end(1)
    assert await runner == 0
    assert (drain.phase, calls.hung_up) == (DrainPhase.DONE, 0)


async def test_the_deadline_hangs_up_the_rest() -> None:
    calls = FakeCalls(3)
    drain, _ = calls.drain(deadline_s=0.05)
    drain.request()
    assert await drain.run() == 0
    assert calls.hung_up == 1
    assert not calls.live


async def test_a_second_signal_hangs_up_at_once() -> None:
    calls = FakeCalls(1)
    drain, flags = calls.drain(deadline_s=3600)
    runner = asyncio.create_task(drain.run())
    drain.request()
    await asyncio.sleep(0.01)
    drain.request()
    assert await asyncio.wait_for(runner, 5) == 0
    assert (calls.hung_up, flags) == (1, [True])


async def test_calls_that_do_not_end_are_reported() -> None:
    calls = FakeCalls(2)
    calls.stuck = True
    drain, _ = calls.drain(deadline_s=0.01, hangup_timeout_s=0.05)
    drain.request()
    assert await drain.run() == 2


async def test_no_live_calls_means_an_immediate_clean_drain() -> None:
    calls = FakeCalls(0)
    calls.empty.set()
    drain, _ = calls.drain()
    drain.request()
    assert await asyncio.wait_for(drain.run(), 5) == 0


# -- worker count rules -----------------------------------------------------------------


def test_more_than_one_worker_needs_redis_and_postgres() -> None:
    embedded = Settings.from_env({})
    check_workers(embedded, 1)
    with pytest.raises(ConfigError, match="RYMI_REDIS_URL") as caught:
        check_workers(embedded, 2)
    assert "PostgreSQL" in str(caught.value)
    redis_only = Settings.from_env({"RYMI_REDIS_URL": "redis://localhost:6379/0"})
    with pytest.raises(ConfigError, match="PostgreSQL") as caught:
        check_workers(redis_only, 4)
    assert "RYMI_REDIS_URL" not in str(caught.value)
    fleet = Settings.from_env(
        {"RYMI_REDIS_URL": "redis://r:6379/0", "RYMI_DATABASE_URL": "postgresql://u@db/rymi"}
    )
    check_workers(fleet, 8)
    for bad in (0, 65):
        with pytest.raises(ConfigError, match="1-64"):
            check_workers(fleet, bad)


# -- real processes ----------------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _post(port: int, path: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310 - loopback
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_until(predicate: object, timeout: float = 15.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _ended(log: Path) -> list[tuple[str, str, str]]:
    if not log.exists():
        return []
    return [tuple(line.split()) for line in log.read_text().splitlines()]  # type: ignore[misc]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _worker(
    tmp_path: Path, port: int, started: list[subprocess.Popen[str]]
) -> subprocess.Popen[str]:
    env = {**os.environ, "DRAIN_LOG": str(tmp_path / "ended.log")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ops.drain_worker", str(port)],
        cwd=_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    started.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.slow
def test_sigterm_flips_readiness_and_lets_the_live_call_finish(
    tmp_path: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    proc = _worker(tmp_path, port, spawn)
    assert _get(port, "/readyz")[0] == 200
    assert _post(port, "/call?seconds=3")[0] == 200

    proc.send_signal(signal.SIGTERM)
    _wait_until(lambda: _get(port, "/readyz")[0] == 503, timeout=5)
    _, body = _get(port, "/readyz")
    assert json.loads(body)["checks"] == {"draining": "yes"}
    assert _post(port, "/inbound")[0] == 503  # new calls go elsewhere
    assert _get(port, "/healthz")[0] == 200  # still alive: not a restart candidate
    samples = parse(_get(port, "/metrics")[1])
    assert value(samples, "gateway_draining") == 1
    assert value(samples, "gateway_calls_active", carrier="twilio") == 1
    assert proc.poll() is None  # the call is still running

    assert proc.wait(timeout=15) == 0
    assert [(call, reason) for _, call, reason in _ended(tmp_path / "ended.log")] == [
        ("c1", "completed")
    ]


@pytest.mark.slow
def test_a_second_sigterm_hangs_up_the_rest_and_exits_0(
    tmp_path: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    proc = _worker(tmp_path, port, spawn)
    for _ in range(3):
        assert _post(port, "/call?seconds=600")[0] == 200
    proc.send_signal(signal.SIGTERM)
    _wait_until(lambda: _get(port, "/readyz")[0] == 503, timeout=5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    ended = _ended(tmp_path / "ended.log")
    assert sorted(call for _, call, _ in ended) == ["c1", "c2", "c3"]
    assert {reason for _, _, reason in ended} == {"drain"}  # each one finalized


@pytest.mark.slow
def test_supervisor_shares_a_port_restarts_a_dead_worker_and_drains_all(
    tmp_path: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    env = {**os.environ, "DRAIN_LOG": str(tmp_path / "ended.log")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "tests.ops.supervise", "2", str(port), str(tmp_path / "prom")],
        cwd=_ROOT,
        env=env,
        text=True,
    )
    spawn.append(supervisor)

    pids: dict[int, int] = {}  # pid -> calls started on it

    def both_workers_took_calls() -> bool:
        status, body = _post(port, "/call?seconds=600")
        if status == 200:
            pid = json.loads(body)["pid"]
            pids[pid] = pids.get(pid, 0) + 1
        return len(pids) == 2

    _wait_until(both_workers_took_calls, timeout=30)
    total = sum(pids.values())
    # Any worker's /metrics reports the host: every scrape sees all calls.
    for _ in range(6):
        samples = parse(_get(port, "/metrics")[1])
        assert value(samples, "gateway_calls_active", carrier="twilio") == total

    victim, victim_calls = next(iter(pids.items()))
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        seen = {json.loads(_get(port, "/healthz")[1])["pid"] for _ in range(8)}
        return victim not in seen and len(seen) == 2

    _wait_until(replaced, timeout=30)
    samples = parse(_get(port, "/metrics")[1])
    assert value(samples, "gateway_calls_active", carrier="twilio") == total - victim_calls

    supervisor.send_signal(signal.SIGTERM)  # drain: the survivors' calls are long...
    _wait_until(lambda: _get(port, "/readyz")[0] == 503, timeout=10)
    supervisor.send_signal(signal.SIGTERM)  # ...so the second signal hangs them up
    assert supervisor.wait(timeout=30) == 0
    ended = _ended(tmp_path / "ended.log")
    assert len(ended) == total - victim_calls  # the killed worker's calls never finalized
    assert {reason for _, _, reason in ended} == {"drain"}
    assert victim not in {int(pid) for pid, _, _ in ended}
