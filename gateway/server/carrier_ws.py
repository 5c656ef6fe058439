"""A carrier's media WebSocket: aiohttp's HTTP handshake, then frames in the read callback.

aiohttp answers the upgrade request, so the media route keeps aiohttp's routing, the
token and signature checks (403 before the upgrade) and its HTTP parsing. Once the
``101`` is written, every byte the carrier sends goes to :meth:`CarrierConnection.feed_data`
(``RequestHandler.set_parser``, the hook aiohttp's own ``WebSocketResponse`` uses) and
is parsed in that callback by :class:`~gateway.server.ws_frames.FrameParser`. A media
frame reaches the call synchronously: no ``WSMessage``, no queue, no task wake-up per
frame (aiohttp's receive path, about a tenth of the gateway's CPU under load: see
docs/performance.md). The gateway writes whole frames synchronously too
(:meth:`CarrierConnection.send`).

Until the call attaches (:meth:`CarrierConnection.attach`), messages wait in a short
queue read by :meth:`CarrierConnection.receive` (the ``start`` message); while it holds
:data:`_QUEUE_HIGH` messages the transport is not read, so TCP holds the carrier back.

Closing (RFC 6455 §5.5.1, §7.1): either side sends a close frame and the other answers
with one; the server then closes the TCP connection first (§7.1.1). A protocol error, a
message over the size limit or a message flood *fails* the connection (§7.1.7): our
close frame goes out with the code at once, what follows is discarded, and the
transport is closed when the carrier answers, when it hangs up, or after
:data:`CLOSE_TIMEOUT_S`.

Back-pressure on writes: a carrier that stops reading would let the transport's buffer
grow without bound (the pacer releases real time, 8-32 kB/s). Beyond
:data:`MAX_BUFFERED_BYTES` (seconds of audio) frames are dropped and counted
(reliability.md §5.4: bounded memory per call, newest state wins).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import hashlib
import logging
from collections import deque
from enum import Enum
from time import monotonic
from typing import Any, Final, Protocol, cast

from aiohttp import web

from gateway.errors import CarrierProtocolError, CloseCode
from gateway.server.limits import MessageRate
from gateway.server.ws_frames import (
    OP_CLOSE,
    OP_PING,
    PING_FRAME,
    Control,
    FrameParser,
    close_frame,
    encode_frame,
    parse_close,
    pong_frame,
)

__all__ = [
    "CLOSE_TIMEOUT_S",
    "MAX_BUFFERED_BYTES",
    "CarrierConnection",
    "CarrierListener",
    "accept",
]

log = logging.getLogger("gateway.media")

MAX_BUFFERED_BYTES: Final = 256 * 1024
"""Bytes waiting in the transport above which frames are dropped (the carrier is not reading)."""
CLOSE_TIMEOUT_S: Final = 5.0
"""How long a close waits for the carrier's close frame before dropping the connection."""
_QUEUE_HIGH: Final = 64
"""Messages queued before the call attaches above which reading pauses (~1.3 s of audio)."""
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_NOT_EOF: Final = (False, b"")


class _State(Enum):
    OPEN = "open"
    CLOSING = "closing"
    """Our close frame is sent (or the connection failed); waiting for the carrier's."""
    CLOSED = "closed"


class CarrierListener(Protocol):
    """The call's side of a carrier connection (called in the transport's read callback)."""

    def on_carrier_message(self, message: str | bytes, received_at: float) -> None:
        """One whole text or binary message, read at ``received_at``.

        ``received_at`` is :func:`time.monotonic`: the clock of ``loop.time()`` (asyncio's
        loop returns it as is; uvloop's in whole milliseconds, so up to ~1 ms behind).
        """

    def on_carrier_closed(self, failure: CloseCode | None) -> None:
        """The carrier closed the socket (``None``) or it failed with ``failure``."""


async def accept(
    request: web.Request,
    *,
    max_message_bytes: int,
    rate: MessageRate,
    close_timeout_s: float = CLOSE_TIMEOUT_S,
) -> CarrierConnection:
    """Complete the WebSocket handshake (§4.2.2) and return the open connection.

    Raises:
        web.HTTPBadRequest: not a valid version-13 upgrade request (§4.2.1).
        ConnectionResetError: the client went away before the upgrade.
    """
    accept_key = _accept_key(request)
    headers = {"Upgrade": "websocket", "Connection": "upgrade", "Sec-WebSocket-Accept": accept_key}
    response = web.StreamResponse(status=101, headers=headers)
    response.force_close()  # no HTTP request follows on this connection
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost before the upgrade")
    connection = CarrierConnection(transport, response, max_message_bytes, rate, close_timeout_s)
    await response.prepare(request)
    # The parser hook aiohttp's WebSocketResponse uses; it is typed for aiohttp's reader.
    request.protocol.set_parser(cast(Any, connection))
    return connection


def _accept_key(request: web.Request) -> str:
    """The ``Sec-WebSocket-Accept`` value for a valid upgrade request (§4.2.1, §4.2.2)."""
    headers = request.headers
    if request.method != "GET" or headers.get("Upgrade", "").strip().lower() != "websocket":
        raise web.HTTPBadRequest(text="not a WebSocket upgrade\n")
    connection = {token.strip().lower() for token in headers.get("Connection", "").split(",")}
    if "upgrade" not in connection:
        raise web.HTTPBadRequest(text="Connection header lacks 'upgrade'\n")
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise web.HTTPBadRequest(
            text="unsupported WebSocket version\n", headers={"Sec-WebSocket-Version": "13"}
        )
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid = False
    if not valid:
        raise web.HTTPBadRequest(text="bad Sec-WebSocket-Key\n")
    # SHA-1 is what §4.2.2 prescribes for the accept value (a handshake check, not security).
    digest = hashlib.sha1(key.encode() + _GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


class CarrierConnection:
    """One accepted carrier WebSocket: frames in from the read callback, frames out at once.

    Args:
        transport: the connection's transport (duck-typed: uvloop's do not subclass asyncio's).
        response: the ``101`` response the media handler returns to aiohttp.
        max_message_bytes: the largest message accepted (1009 above it).
        rate: the socket's message rate limit (1008 above it).
        close_timeout_s: how long a close waits for the carrier's close frame.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        response: web.StreamResponse,
        max_message_bytes: int,
        rate: MessageRate,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        self.response = response
        self.close_timeout_s = close_timeout_s
        self._transport = transport
        self._parser = FrameParser(max_message_bytes)
        self._rate = rate
        self._loop = asyncio.get_running_loop()
        self._state = _State.OPEN
        self._listener: CarrierListener | None = None
        self._context: contextvars.Context | None = None
        self._detached = False
        """The call has ended: data messages are discarded, not queued."""
        self._queue: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._abort_handle: asyncio.TimerHandle | None = None
        self.failure: CloseCode | None = None
        """Why the connection failed on our side (protocol error, size, rate), if it did."""
        self.close_code: int | None = None
        """The code of the first close frame sent or received."""
        self.dropped = 0
        """Messages dropped because the carrier stopped reading (its buffer was full)."""

    # -- reading (aiohttp's RequestHandler calls these) -----------------------------------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Bytes from the carrier (the transport's read callback); never raises."""
        if self._state is _State.CLOSED:
            return _NOT_EOF
        parser = self._parser
        # The clock behind loop.time(), read precisely: uvloop's loop.time() counts whole
        # milliseconds (libuv's uv_now), too coarse for the sub-ms time a frame spends here.
        now = monotonic()
        for message in parser.feed(data):
            if isinstance(message, Control):
                self._control(message)
            elif self._state is _State.OPEN:
                self._deliver(message, now)
        error = parser.error
        if error is not None and self._state is _State.OPEN:
            self._fail(CloseCode(error.close_code), str(error))
        return _NOT_EOF

    def feed_eof(self) -> None:
        """The TCP connection is gone (aiohttp calls this from ``connection_lost``)."""
        was_open = self._state is _State.OPEN
        self._closed()
        if was_open:
            self._notify_closed(None)

    def _deliver(self, message: str | bytes, now: float) -> None:
        if not self._rate.allow(now):
            self._fail(CloseCode.POLICY_VIOLATION, "message rate over the limit")
            return
        listener, context = self._listener, self._context
        if listener is None or context is None:
            if self._detached:
                return
            self._queue.append(message)
            if len(self._queue) >= _QUEUE_HIGH:
                self._transport.pause_reading()
            self._wake()
            return
        try:
            context.run(listener.on_carrier_message, message, now)
        except Exception:  # the call's own handling failed: end it, keep the loop healthy
            log.exception("carrier message handling failed")
            self._fail(CloseCode.INTERNAL_ERROR, "internal error")

    def _control(self, frame: Control) -> None:
        if frame.opcode == OP_PING:
            if self._state is _State.OPEN:
                self._transport.write(pong_frame(frame.payload))
        elif frame.opcode == OP_CLOSE:
            self._peer_close(frame.payload)
        # A pong needs nothing: the call's keepalive watches caller audio, not pongs.

    def _peer_close(self, payload: bytes) -> None:
        """The carrier's close frame: answer it (if it started), then close TCP (§7.1.1)."""
        try:
            code = parse_close(payload)
        except CarrierProtocolError as exc:
            if self._state is _State.OPEN:
                self._fail(CloseCode(exc.close_code), str(exc))
            else:
                self._closed()
            return
        was_open = self._state is _State.OPEN
        if was_open:  # the carrier started the close: echo it (ours would have set the code)
            self.close_code = code
            self._transport.write(close_frame(code))
        self._closed()
        if was_open:
            self._notify_closed(None)

    # -- the call's side -------------------------------------------------------------------

    def attach(self, listener: CarrierListener) -> None:
        """Deliver messages to ``listener`` from now on (queued ones first), in this context.

        The caller's :mod:`contextvars` context (the call's log binding) is kept and each
        delivery runs in it.
        """
        context = contextvars.copy_context()
        if self._state is not _State.OPEN:  # it failed or closed before the call attached
            context.run(listener.on_carrier_closed, self.failure)
            return
        queued, self._queue = self._queue, deque()
        now = monotonic()
        for message in queued:
            context.run(listener.on_carrier_message, message, now)
        self._listener, self._context = listener, context
        self._transport.resume_reading()

    def detach(self) -> None:
        """Stop delivering messages (the call has ended); later ones are discarded."""
        self._listener = self._context = None
        self._detached = True

    async def receive(self) -> str | bytes | None:
        """The next message before :meth:`attach`; None once the connection closed or failed."""
        while not self._queue:
            if self._state is not _State.OPEN:
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._queue.popleft()
        if len(self._queue) < _QUEUE_HIGH // 2 and self._state is _State.OPEN:
            self._transport.resume_reading()
        return message

    @property
    def writable(self) -> bool:
        """Whether a frame written now would be sent (open and not closing)."""
        return self._state is _State.OPEN and not self._transport.is_closing()

    def send(self, wire: str | bytes) -> bool:
        """Write one message now; False if the socket is closing or the carrier is stalled."""
        transport = self._transport
        if self._state is not _State.OPEN or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            self.dropped += 1
            return False
        if isinstance(wire, str):
            transport.write(encode_frame(wire.encode(), text=True))
        else:
            transport.write(encode_frame(wire, text=False))
        return True

    def ping(self) -> bool:
        """Write an empty ping (§5.5.2); False if the socket is closing."""
        if not self.writable:
            return False
        self._transport.write(PING_FRAME)
        return True

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code``: send the close frame, wait (bounded) for the carrier's answer."""
        if self._state is _State.OPEN:
            self._send_close(code, reason)
        if self._state is _State.CLOSING:
            await asyncio.shield(self._done)
        self._transport.close()

    # -- closing ---------------------------------------------------------------------------

    def _fail(self, code: CloseCode, why: str) -> None:
        """Fail the connection (§7.1.7): close frame now, nothing more is delivered."""
        log.warning("carrier socket closed with %d: %s", int(code), why)
        self.failure = code
        self._send_close(code, why)
        self._notify_closed(code)

    def _send_close(self, code: int, reason: str) -> None:
        self._state = _State.CLOSING
        if self.close_code is None:
            self.close_code = code
        if not self._transport.is_closing():
            self._transport.write(close_frame(code, reason))
        self._transport.resume_reading()  # the carrier's answer must be read
        self._abort_handle = self._loop.call_later(self.close_timeout_s, self._abort)
        self._queue.clear()

    def _abort(self) -> None:
        """The carrier never answered our close: drop the connection without flushing."""
        self._abort_handle = None
        self._transport.abort()
        self._closed()

    def _closed(self) -> None:
        """Nothing more to exchange: close TCP (the server closes first, §7.1.1)."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._abort_handle is not None:
            self._abort_handle.cancel()
            self._abort_handle = None
        self._transport.close()
        if not self._done.done():
            self._done.set_result(None)
        self._wake()

    def _notify_closed(self, failure: CloseCode | None) -> None:
        listener, context = self._listener, self._context
        if listener is None or context is None:
            self._wake()
            return
        self._listener = self._context = None  # told once; nothing is delivered after
        try:
            context.run(listener.on_carrier_closed, failure)
        except Exception:
            log.exception("carrier close handling failed")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
