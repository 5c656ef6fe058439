"""A real WebSocket agent for the fault tests: counts what it gets, can die on cue.

It speaks ``rymi-agent/1`` over a real aiohttp WebSocket server on loopback and checks
the gateway's bearer token with :func:`gateway.bridge.protocol.verify_agent_token`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import aiohttp
from aiohttp import web

from gateway.bridge.protocol import decode_gateway_message, verify_agent_token
from tests.helpers.redis_server import free_port

AGENT_SECRET = "agent-secret-" + "s" * 32


@dataclass
class RecordingAgent:
    """What the agent received; ``die_after_frames`` closes the socket abruptly."""

    die_after_frames: int | None = None
    audio_bytes: int = 0
    frames: int = 0
    messages: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        claims_agent = request.match_info["agent"]
        verify_agent_token(token, AGENT_SECRET.encode(), agent_id=claims_agent, now=time.time())
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.audio_bytes += len(msg.data)
                self.frames += 1
                if self.die_after_frames is not None and self.frames >= self.die_after_frames:
                    # Abrupt: no hangup, no close handshake from our side's point of view.
                    await ws.close(code=1011)
                    break
            elif msg.type == aiohttp.WSMsgType.TEXT:
                message = decode_gateway_message(msg.data)
                self.messages.append(type(message).__name__)
        return ws


class ServableAgent(Protocol):
    """A test agent: a WebSocket handler and the URL it is served at (set on start)."""

    url: str

    async def handle(self, request: web.Request) -> web.WebSocketResponse: ...


AgentT = TypeVar("AgentT", bound=ServableAgent)


@contextlib.asynccontextmanager
async def agent_server(agent: AgentT) -> AsyncIterator[AgentT]:
    """Serve ``agent`` at ``ws://127.0.0.1:<port>/agents/<agent id>``."""
    app = web.Application()
    app.router.add_get("/agents/{agent}", agent.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    agent.url = f"ws://127.0.0.1:{port}/agents"
    try:
        yield agent
    finally:
        await runner.cleanup()
