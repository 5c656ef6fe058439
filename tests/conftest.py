"""Fixtures every suite may use: a real redis-server, and a CI-scalable time unit.

Event loops: tests run on asyncio's own loop; tests marked ``both_loops`` run on it
and on uvloop, the loop ``rymi-gateway serve`` uses by default (their ids end in
``[asyncio]`` / ``[uvloop]``). uvloop differs where it matters to the media path: its
transports do not subclass asyncio's, and its timer handles have no ``when()``.

Redis: ``REDIS_URL`` when set (the test command sets it to a throwaway server it
started), otherwise a private ``redis-server`` started here on a free port for the
session. Nothing here talks to a developer's own Redis on 6379 unless they point
``REDIS_URL`` at it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping

import pytest
import uvloop

from tests.helpers.redis_server import RedisServer, redis_server_binary


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis for this test session (never mocked)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if redis_server_binary() is None:
        pytest.fail(
            "redis-server is not installed: run `sudo apt-get install redis-server` "
            "(or set REDIS_URL to a server to use)"
        )
    with RedisServer.start() as server:
        yield server.url


_ASYNCIO_ONLY: Mapping[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop
}
_BOTH_LOOPS: Mapping[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """asyncio's loop for every test; uvloop as well for tests marked ``both_loops``."""
    return _BOTH_LOOPS if item.get_closest_marker("both_loops") else _ASYNCIO_ONLY
