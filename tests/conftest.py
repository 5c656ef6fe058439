"""Fixtures every suite may use: a real redis-server, and a CI-scalable time unit.

Redis: ``REDIS_URL`` when set (the test command sets it to a throwaway server it
started), otherwise a private ``redis-server`` started here on a free port for the
session. Nothing here talks to a developer's own Redis on 6379 unless they point
``REDIS_URL`` at it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

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
