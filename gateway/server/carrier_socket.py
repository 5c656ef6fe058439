"""The gateway's writes to a carrier's media socket: whole frames, written synchronously.

aiohttp's ``WebSocketResponse.send_str``/``send_bytes`` are coroutines: every 20 ms
frame to every caller would be a coroutine run, a check for back-pressure and, behind a
lock, often a task switch. The paced writer of :mod:`gateway.server.call` runs as a
timer callback instead, so it writes each frame here in one ``transport.write``:

* RFC 6455 §5.2 framing: FIN set, no extensions (the socket is opened with
  ``compress=False``, so RSV1 is never negotiated), opcode text (0x1) or binary (0x2),
  7/16/64-bit payload length; a server's frames are never masked (§5.1).
* aiohttp keeps writing its own control frames (pongs, the close) through its writer;
  the call's keepalive pings go out here (:meth:`CarrierSocket.ping`). asyncio runs one
  callback at a time and each frame here and there is one ``write`` call, so frames
  never interleave; nothing is written once aiohttp has started closing (``ws.closed``)
  or the transport is closing.
* Back-pressure: a carrier that stops reading would let the transport's buffer grow
  without bound (the pacer only releases real time, 8-32 kB/s). Beyond
  :data:`MAX_BUFFERED_BYTES` (several seconds of audio) frames are dropped and counted
  instead (reliability.md §5.4: bounded memory per call, newest state wins).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Final

from aiohttp import web

from gateway.errors import CloseCode

__all__ = ["MAX_BUFFERED_BYTES", "CarrierSocket", "close_code_of", "encode_frame"]

MAX_BUFFERED_BYTES: Final = 256 * 1024
"""Bytes waiting in the transport above which frames are dropped (the carrier is not reading)."""

_FIN_TEXT = 0x81  # FIN + opcode 0x1
_FIN_BINARY = 0x82  # FIN + opcode 0x2
_PING = bytes((0x89, 0))  # FIN + opcode 0x9, no payload
_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def encode_frame(payload: bytes, *, text: bool) -> bytes:
    """One unmasked, unfragmented RFC 6455 frame carrying ``payload``."""
    first = _FIN_TEXT if text else _FIN_BINARY
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return _SHORT.pack(first, 126, size) + payload
    return _LONG.pack(first, 127, size) + payload


class CarrierSocket:
    """Synchronous writer of one accepted carrier WebSocket.

    Args:
        ws: the prepared aiohttp response (for its closing state).
        transport: the connection's transport (``request.transport``).
    """

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
        self._ws = ws
        # Duck-typed on purpose: uvloop's transports do not subclass asyncio's classes.
        self._transport = transport
        self.dropped = 0
        """Messages dropped because the carrier stopped reading (its buffer was full)."""

    @property
    def writable(self) -> bool:
        """Whether a frame written now would be sent (open and not closing)."""
        transport = self._transport
        return transport is not None and not self._ws.closed and not transport.is_closing()

    def ping(self) -> bool:
        """Write an empty ping (RFC 6455 §5.5.2); False if the socket is closing."""
        transport = self._transport
        if transport is None or self._ws.closed or transport.is_closing():
            return False
        transport.write(_PING)
        return True

    def send(self, wire: str | bytes) -> bool:
        """Write one message now; False if the socket is closing or the carrier is stalled."""
        transport = self._transport
        if transport is None or self._ws.closed or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            self.dropped += 1
            return False
        if isinstance(wire, str):
            transport.write(encode_frame(wire.encode(), text=True))
        else:
            transport.write(encode_frame(wire, text=False))
        return True


def close_code_of(code: int | None) -> CloseCode:
    """The close code aiohttp used, as ours (protocol error when it is not one of ours)."""
    try:
        return CloseCode(code) if code is not None else CloseCode.PROTOCOL_ERROR
    except ValueError:
        return CloseCode.PROTOCOL_ERROR
