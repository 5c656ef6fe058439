"""``serve --workers N``: N worker processes sharing one port, and their supervisor.

One Python process uses one core for its event loop. To use a host's cores, the
supervisor starts N copies of the gateway that all bind the same port with
``SO_REUSEPORT`` (Linux spreads new connections across them). Because an answer and its
media stream may land on different workers, nothing between them may live in one
process: more than one worker needs the fleet backends (Redis coordination, a shared
PostgreSQL database), exactly as several hosts do; :func:`check_workers` says so.

The supervisor:

* empties ``PROMETHEUS_MULTIPROC_DIR`` and sets it for the workers, so any worker's
  ``/metrics`` reports the whole host (:mod:`gateway.ops.registry`);
* restarts a worker that dies while serving (after a short, growing back-off) and calls
  :func:`~gateway.ops.registry.worker_exited` for it, so its live-call gauges vanish;
* forwards SIGTERM/SIGINT to every worker (each drains, :mod:`gateway.ops.drain`); a
  second signal is forwarded too (the workers hang up their remaining calls); no worker
  is restarted once draining;
* exits 0 when every worker exited 0 after the drain, 1 otherwise.

The worker command is given by the caller (``serve`` re-runs itself in worker mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.ops.registry import MULTIPROC_ENV, prepare_multiprocess_dir, worker_exited

__all__ = ["MAX_WORKERS", "Supervisor", "check_workers"]

log = logging.getLogger("gateway.serve")

MAX_WORKERS = 64
"""Largest ``--workers``: more processes than that on one host is a configuration error."""

_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)  # restart delays of a crash-looping worker
_STABLE_S = 30.0  # a worker that ran this long before dying starts the back-off over


def check_workers(settings: Settings, workers: int) -> None:
    """Refuse a worker count the settings cannot support.

    Raises:
        ConfigError: ``workers`` outside 1-64, or more than one worker without Redis
            coordination and a PostgreSQL database (names what is missing).
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError("--workers", f"expected 1-{MAX_WORKERS}, got {workers}")
    if workers == 1:
        return
    missing = []
    if settings.redis_url is None:
        missing.append("RYMI_REDIS_URL (coordination: concurrency slots, live-call registry)")
    if not settings.database_url.startswith("postgresql"):
        missing.append("a PostgreSQL RYMI_DATABASE_URL (SQLite cannot be shared by processes)")
    if missing:
        raise ConfigError(
            "--workers",
            f"{workers} workers share calls between processes and need "
            + " and ".join(missing)
            + "; run one worker on the embedded defaults",
        )


class Supervisor:
    """Runs ``workers`` copies of ``command`` until a stop signal, then drains them.

    Args:
        workers: how many worker processes.
        command: the worker's argv (``[sys.executable, "-m", "gateway", "serve", ...]``).
        multiprocess_dir: the metrics directory shared by the workers (emptied first).
        environ: the workers' base environment (default: this process's).
    """

    def __init__(
        self,
        workers: int,
        command: Sequence[str],
        *,
        multiprocess_dir: Path,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._count = workers
        self._command = list(command)
        self._dir = multiprocess_dir
        self._env = {**(os.environ if environ is None else environ), MULTIPROC_ENV: str(self._dir)}
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stop = asyncio.Event()
        self._failures = 0
        self.restarts = 0
        """Workers restarted after an unexpected exit."""

    @property
    def pids(self) -> list[int]:
        """The live workers' process ids, by slot."""
        return [proc.pid for proc in self._procs.values()]

    def request_stop(self) -> None:
        """Forward a stop signal to every worker (first: drain; second: hang up)."""
        self._stop.set()
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    async def run(self, *, install_signals: bool = True) -> int:
        """Start the workers and supervise them; returns the exit code (0 = clean)."""
        prepare_multiprocess_dir(self._dir)
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if install_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop)
        slots = [asyncio.create_task(self._slot(n), name=f"worker-{n}") for n in range(self._count)]
        codes = await asyncio.gather(*slots)
        for sig in signals:  # every worker is gone: a late signal must not kill the exit
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        return 0 if all(code == 0 for code in codes) else 1

    async def _slot(self, slot: int) -> int:
        """Keep one worker running until the stop; returns its last exit code."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            proc = await asyncio.create_subprocess_exec(*self._command, env=self._env)
            self._procs[slot] = proc
            log.info("worker %d started (pid %d)", slot, proc.pid)
            if self._stop.is_set():  # the signal came while it was starting
                proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            worker_exited(proc.pid, self._dir)
            if self._stop.is_set():
                log.info("worker %d (pid %d) exited with %d", slot, proc.pid, code)
                return code
            if loop.time() - started > _STABLE_S:
                self._failures = 0  # it ran fine for a while: not a crash loop
            delay = _BACKOFF_S[min(self._failures, len(_BACKOFF_S) - 1)]
            self._failures += 1
            self.restarts += 1
            log.warning(
                "worker %d (pid %d) exited with %d while serving; restarting in %.1f s",
                slot,
                proc.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return 0
