"""The reference agent server on each of its edges, in the test's loop."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from gateway.bridge.protocol import issue_agent_token
from loadtest.agent_call import AgentServerConfig, CallRecord
from loadtest.agent_picows import AgentServer
from loadtest.agent_server import call_records, make_app, wait_for_calls
from tests.bridge.conftest import AGENT_ID, SECRET, start_server


@dataclass
class Served:
    """An agent server on ``base`` (``http://127.0.0.1:PORT``)."""

    base: str
    wait_for_calls: Callable[[int], Awaitable[None]]
    records: Callable[[], list[CallRecord]]
    close: Callable[[], Awaitable[None]]
    """Shut down: live calls are closed with 1001 (the fixture calls it again, harmless)."""

    def ws_url(self, agent_id: str = AGENT_ID) -> str:
        return self.base.replace("http://", "ws://") + f"/agents/{agent_id}"


def bearer(call_id: str = "call-1", agent_id: str = AGENT_ID) -> dict[str, str]:
    """The upgrade headers the gateway sends for ``call_id``."""
    token = issue_agent_token(SECRET, agent_id=agent_id, call_id=call_id, now=time.time())
    return {"Authorization": f"Bearer {token}"}


ServeAgent = Callable[[AgentServerConfig], Awaitable[Served]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session (the gateway's aiohttp link uses one too)."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(params=["aiohttp", "picows"])
async def serve_agent(request: pytest.FixtureRequest) -> AsyncIterator[ServeAgent]:
    """Start the agent server on the edge of the parameter: :func:`make_app` (aiohttp,
    in-process use) or :class:`AgentServer` (picows, what the process serves)."""
    closers: list[Callable[[], Awaitable[None]]] = []

    async def serve(config: AgentServerConfig) -> Served:
        if request.param == "aiohttp":
            app = make_app(config)
            server = await start_server(app)
            closers.append(server.close)
            return Served(
                str(server.make_url("")).rstrip("/"),
                lambda n: wait_for_calls(app, n),
                lambda: call_records(app),
                server.close,
            )
        agents = AgentServer(config)
        host, port = await agents.start("127.0.0.1", 0)
        closers.append(agents.close)
        return Served(
            f"http://{host}:{port}",
            agents.calls.wait_for,
            lambda: list(agents.calls.records),
            agents.close,
        )

    yield serve
    for close in closers:
        await close()
