"""Scripted agents: real WebSocket servers that do exactly what a test tells them.

A :class:`ScriptedAgent` authenticates the gateway like a real agent (its bearer token,
checked with :func:`~gateway.bridge.protocol.verify_agent_token`), receives ``start``,
runs the test's script (send this, close with that, stop reading), then records
everything the gateway sends until the socket closes, and the close code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from gateway.bridge.protocol import (
    GatewayMessage,
    UnknownMessage,
    decode_gateway_message,
    verify_agent_token,
)
from gateway.errors import AgentError
from tests.bridge.conftest import SECRET

Script = Callable[[web.WebSocketResponse], Awaitable[None]]


async def say_nothing(ws: web.WebSocketResponse) -> None:
    """The default script: just listen."""


class ScriptedAgent:
    """One-call agent server driven by a script.

    Args:
        script: what to do right after ``start``.
        read: whether to go on reading after the script (False: a stalled agent).
    """

    def __init__(self, script: Script = say_nothing, *, read: bool = True) -> None:
        self.script = script
        self.read = read
        self.texts: list[str] = []
        self.audio: list[bytes] = []
        self.close_code: int | None = None
        self.done = asyncio.Event()
        self.release = asyncio.Event()
        """Set it to let a stalled agent end its handler."""

    def messages(self) -> list[GatewayMessage | UnknownMessage]:
        """The text frames received, decoded (``start`` first)."""
        return [decode_gateway_message(t) for t in self.texts]

    def app(self) -> web.Application:
        """The aiohttp application serving ``/agents/{agent_id}``."""
        app = web.Application()
        app.router.add_get("/agents/{agent_id}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            verify_agent_token(
                token, SECRET, agent_id=request.match_info["agent_id"], now=time.time()
            )
        except AgentError:
            raise web.HTTPUnauthorized() from None
        ws = web.WebSocketResponse(max_msg_size=0)  # 0: no limit, the test decides
        await ws.prepare(request)
        try:
            first = await ws.receive()
            self.texts.append(first.data)
            await self.script(ws)
            if not self.read:
                await self.release.wait()
            await self._record(ws)
        finally:
            self.close_code = ws.close_code
            self.done.set()
        return ws

    async def _record(self, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                self.texts.append(msg.data)
            elif msg.type is WSMsgType.BINARY:
                self.audio.append(msg.data)
