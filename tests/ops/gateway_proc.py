"""Real ``rymi-gateway serve`` subprocesses for the drain and fleet tests.

:func:`seed` prepares the database the way an operator would (migrations, a tenant per
carrier with the built-in echo agent on its own number, credit), from this process,
with the same master key the gateway gets; :class:`GatewayProcess` starts
``python -m gateway serve`` with JSON logs, waits until it answers ``/healthz``, and
sends it signals. The carrier side is played by the helpers of
:mod:`tests.server.harness` against ``.base``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp

from gateway.config import Settings
from gateway.store.sql_state import SqlState
from tests.helpers.redis_server import free_port
from tests.server.harness import credentials

MASTER_KEY = base64.urlsafe_b64encode(bytes(range(7, 39))).decode()
"""The master key the seeding process and every gateway share (a fleet must)."""


@dataclass(frozen=True)
class Seeded:
    """A tenant made by :func:`seed`."""

    tenant_id: str
    number: str


async def seed(
    env: Mapping[str, str], tenants: Mapping[str, tuple[str, int | None]], *, migrate: bool
) -> dict[str, Seeded]:
    """Create one tenant per entry ``name -> (carrier, concurrency limit)``.

    Each gets its carrier's credentials (:func:`tests.server.harness.credentials`), a
    published echo agent on a number of its own, and 5 units of credit.
    """
    settings = Settings.from_env(env)
    state = await SqlState.open(settings, migrate=migrate)
    made: dict[str, Seeded] = {}
    try:
        for position, (name, (carrier, limit)) in enumerate(tenants.items()):
            directory = state.directory
            tenant = await directory.create_tenant(f"{name}-{os.urandom(3).hex()}", limit)
            await directory.connect_carrier(tenant.id, credentials(carrier))
            agent = await directory.create_agent(tenant.id, name="echo", published=True)
            number = f"+1555{os.getpid() % 1000:03d}{position:04d}"
            await directory.add_number(tenant.id, number, agent.id)
            await state.ledger.top_up(tenant.id, 5_000_000)
            made[name] = Seeded(tenant.id, number)
    finally:
        await state.close()
    return made


def base_env(tmp: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a test gateway (JSON logs, short timers, fixed master key)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("RYMI_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        {
            "RYMI_DATA_DIR": str(tmp),
            "RYMI_DATABASE_URL": database_url,
            "RYMI_MASTER_KEYS": MASTER_KEY,
            "RYMI_LOG_FORMAT": "json",
            "RYMI_HOST": "127.0.0.1",
            "RYMI_CHECKPOINT_INTERVAL_S": "1",
            "RYMI_LEASE_RENEW_INTERVAL_S": "1",
            "RYMI_LEASE_TTL_S": "5",
        }
    )
    env.update(extra)
    return env


class GatewayProcess:
    """One ``python -m gateway serve`` subprocess on its own port.

    Args:
        env: its environment (see :func:`base_env`); the port and public URL are added.
        log_path: where its standard error (the JSON logs) goes.
        args: extra ``serve`` arguments (``--workers 2``).
    """

    def __init__(self, env: Mapping[str, str], log_path: Path, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full = dict(env) | {"RYMI_PORT": str(self.port), "RYMI_PUBLIC_BASE_URL": self.base}
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--no-demo", *args],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,  # its own process group: close() reaches its workers
        )

    async def wait_up(self, http: aiohttp.ClientSession, timeout_s: float = 20.0) -> None:
        """Return once ``/readyz`` answers 200 (fail with the logs otherwise)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}: {self.logs()}")
            try:
                async with http.get(f"{self.base}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"gateway not ready in {timeout_s} s: {self.logs()[-2000:]}")

    def terminate(self) -> None:
        """Send SIGTERM (the drain)."""
        self.proc.send_signal(signal.SIGTERM)

    async def exit_code(self, timeout_s: float = 20.0) -> int:
        """Wait for the process to exit; its return code."""
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway still running after {timeout_s} s")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def logs(self) -> str:
        """Everything it logged so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """Its JSON log lines, parsed (non-JSON lines, e.g. a crash, are skipped)."""
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def close(self) -> None:
        """Kill it and its workers if they still run; close the log."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(5)
        self._log.close()
