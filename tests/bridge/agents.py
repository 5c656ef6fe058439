"""Scripted agents: real WebSocket servers that do exactly what a test tells them.

A :class:`ScriptedAgent` authenticates the gateway like a real agent (its bearer token,
checked with :func:`~gateway.bridge.protocol.verify_agent_token`), receives ``start``,
runs the test's script (send this, close with that, stop reading), then records
everything the gateway sends until the socket closes, and the close code.
:func:`raw_frame` builds frames aiohttp would not send (fragments, broken framing).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from gateway.bridge.protocol import (
    GatewayMessage,
    Transcript,
    UnknownMessage,
    decode_gateway_message,
    encode_message,
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
        read: whether to go on reading after the script (False: a stalled agent, whose
            socket's receive buffer is then fixed at 64 KiB: loopback's autotuning would
            otherwise let it take megabytes more while "not reading", at its own pace).
    """

    def __init__(self, script: Script = say_nothing, *, read: bool = True) -> None:
        self.script = script
        self.read = read
        self.texts: list[str] = []
        self.audio: list[bytes] = []
        self.received: list[str | bytes] = []
        """Text and audio in the order they arrived (``start`` excluded)."""
        self.request: web.Request | None = None
        """The upgrade request, once the gateway has connected (its transport: raw writes)."""
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
        self.request = request
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            verify_agent_token(
                token, SECRET, agent_id=request.match_info["agent_id"], now=time.time()
            )
        except AgentError:
            raise web.HTTPUnauthorized() from None
        ws = web.WebSocketResponse(max_msg_size=0)  # 0: no limit, the test decides
        if not self.read:
            self.transport().get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024
            )
        await ws.prepare(request)
        try:
            first = await ws.receive()
            self.texts.append(first.data)
            await self.act(ws)
            if not self.read:
                await self.release.wait()
            await self._record(ws)
        finally:
            self.close_code = ws.close_code
            self.done.set()
        return ws

    async def act(self, ws: web.WebSocketResponse) -> None:
        """What to do right after ``start``: the script, unless a subclass knows better."""
        await self.script(ws)

    def transport(self) -> asyncio.Transport:
        """The socket's transport, for raw writes (once the gateway has connected)."""
        assert self.request is not None
        transport = self.request.transport
        assert transport is not None
        return transport

    async def _record(self, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                self.texts.append(msg.data)
                self.received.append(msg.data)
            elif msg.type is WSMsgType.BINARY:
                self.audio.append(msg.data)
                self.received.append(msg.data)


def raw_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One server-to-client frame (unmasked, RFC 6455 §5.2), payload under 64 KiB."""
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([size]) if size < 126 else bytes([126]) + size.to_bytes(2, "big")
    return head + payload


class RawAgent(ScriptedAgent):
    """Writes ``raw`` bytes (frames built by :func:`raw_frame`) on the socket after start."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw

    async def act(self, ws: web.WebSocketResponse) -> None:
        self.transport().write(self.raw)


class FloodingAgent(ScriptedAgent):
    """Sends numbered audio frames until its TCP window is full, then ``extra`` more.

    ``stalled`` is set once the socket took no more: the kernel's buffers, both sides,
    are full. The ``extra`` frames then wait in aiohttp's send until the gateway reads
    again; a ``transcript`` "done" ends the flood. By default they are 8 MB: more than
    loopback's socket buffers (a few MB) and aiohttp's client read-ahead (512 KiB)
    together, so the agent stays stalled while the gateway does not read.
    """

    def __init__(self, *, frame_bytes: int = 32_000, extra: int = 250) -> None:
        super().__init__()
        self.frame_bytes = frame_bytes
        self.extra = extra
        self.sent = 0
        self.stalled = asyncio.Event()
        self.finished = asyncio.Event()
        """Set once the whole flood is on its way (the gateway read it)."""

    def frame(self, seq: int) -> bytes:
        """Frame number ``seq``: its number, then silence."""
        return seq.to_bytes(4, "little") + bytes(self.frame_bytes - 4)

    async def act(self, ws: web.WebSocketResponse) -> None:
        transport = self.transport()
        while not transport.get_write_buffer_size():  # the kernel took it all so far
            await ws.send_bytes(self.frame(self.sent))
            self.sent += 1
        self.stalled.set()
        for _ in range(self.extra):
            await ws.send_bytes(self.frame(self.sent))
            self.sent += 1
        await ws.send_str(encode_message(Transcript(role="agent", text="done")))
        self.finished.set()
