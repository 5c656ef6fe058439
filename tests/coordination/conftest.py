"""A "cluster" fixture: several coordination instances sharing one backend.

The same tests run against the in-process backend (several handles on one
:class:`MemoryHub` with a fake clock, so expiry costs no sleeping) and against a real
redis-server (several :class:`RedisCoordination` objects, each its own connection pool,
as separate gateway processes would have; short TTLs and polling).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.store.coordination import Coordination, MemoryHub
from gateway.store.coordination.redis import RedisCoordination

TTL = 1.0
"""Lease TTL the contract tests use (seconds): short, so Redis expiry tests stay quick."""

POLL = 0.05
"""Seconds between checks while waiting for something to happen on Redis."""


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Cluster:
    """Gateway instances sharing one coordination backend."""

    def __init__(self, kind: str, redis_url: str | None) -> None:
        self.kind = kind
        self.clock = FakeClock()
        self._hub = MemoryHub(clock=self.clock, tombstone_ttl=60.0)
        self._url = redis_url
        self._namespace = f"test-{uuid.uuid4().hex[:12]}"
        self._instances: list[Coordination] = []

    def instance(self, instance_id: str) -> Coordination:
        """A new handle for the gateway instance ``instance_id``."""
        coord: Coordination
        if self.kind == "memory":
            coord = self._hub.connect(instance_id)
        else:
            assert self._url is not None
            # A 5 s connect/reply timeout, not the gateway's 0.5 s: these tests check the
            # contract under concurrency (up to 4 pools of 64 connections opened at once),
            # and on a loaded CI machine 200 connects in one burst can take over 0.5 s.
            # What a slow or unreachable Redis does is tested on its own (test_redis_failures.py).
            coord = RedisCoordination.from_url(
                self._url,
                instance_id,
                timeout=5.0,
                namespace=self._namespace,
                barrier=0,
                command_poll=0.05,
            )
        self._instances.append(coord)
        return coord

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` go by on the backend's clock."""
        if self.kind == "memory":
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    async def eventually(
        self, check: Callable[[], Awaitable[bool]], *, within: float, what: str
    ) -> None:
        """Wait (on the backend's clock) until ``check()`` is true, failing after ``within``."""
        waited = 0.0
        while not await check():
            if waited > within:
                pytest.fail(f"{what}: not true after {within} s")
            await self.pass_time(POLL)
            waited += POLL

    async def aclose(self) -> None:
        for coord in self._instances:
            await coord.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """A fresh cluster on each backend (Redis: a private namespace on the session server)."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    cluster = Cluster(request.param, url)
    yield cluster
    await cluster.aclose()
