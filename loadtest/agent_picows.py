"""The agent server's picows edge: what ``python -m loadtest.agent_server`` serves.

The agent server shares the cores with the gateway it helps measure and answers every
caller frame of every call (50 a second each way), so its per-frame path is picows's:
frames parsed and written in C, one callback per frame from the socket's read callback,
no task, future or queue per message. The calls themselves are
:class:`~loadtest.agent_call.AgentCall`\\ s, as on the aiohttp edge
(:func:`loadtest.agent_server.make_app`); what the edge adds is what aiohttp did there:

* **Routes**: ``GET /agents/<agent_id>`` (the upgrade; a bearer token that does not
  verify gets 401 with ``WWW-Authenticate``, RFC 6750 §3.1), ``GET /stats`` and
  ``GET /stats/take`` (JSON), anything else 404. picows serves GET requests only.
* **Messages from frames**: a fragmented message is reassembled
  (:class:`~gateway.bridge.wsclient.MessageAssembler`, RFC 6455 §5.4), text must be
  UTF-8 (else 1007, §8.1), a frame with RSV bits fails the connection (1002: no
  extension was negotiated), a message over the protocol's 64 KiB fails it with 1009.
* **Closing**: the gateway's close frame is answered with 1000 and its code recorded; a
  close of ours (1008 for a bad or missing ``start``, 1001 on shutdown) waits up to
  :data:`CLOSE_TIMEOUT_S` for the gateway's answer, whose code is recorded; a connection
  that ends without a close frame records 1006 (RFC 6455 §7.1.5).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final
from urllib.parse import unquote

import msgspec
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from gateway.bridge.link import AgentItem
from gateway.bridge.protocol import MAX_AUDIO_BYTES
from gateway.bridge.wsclient import FatalViolation, MessageAssembler, decode_text
from gateway.errors import CloseCode
from loadtest.agent_call import (
    AgentCall,
    AgentServerConfig,
    CallLog,
    authorize,
    core_factory,
    stats_json,
)

__all__ = ["CLOSE_TIMEOUT_S", "AgentServer"]

CLOSE_TIMEOUT_S: Final = 10.0
"""How long a close of ours waits for the gateway's answer (aiohttp's default too)."""

_TEXT, _BINARY, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE
_CONTINUATION, _PING, _PONG = WSMsgType.CONTINUATION, WSMsgType.PING, WSMsgType.PONG
_NO_CLOSE_FRAME: Final = 1006
_UNAUTHORIZED_HEADERS: Final = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class AgentServer:
    """The agent server on picows: calls, their records and ``/stats``."""

    def __init__(self, config: AgentServerConfig) -> None:
        self.config = config
        self.calls = CallLog()
        self.live: set[_AgentSocket] = set()
        """Calls whose connection is open."""
        self._factory = core_factory(config)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0: a free port); the address bound."""
        self._server = await ws_create_server(
            self._route,
            host,
            port,
            max_frame_size=MAX_AUDIO_BYTES,
        )
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    def stats(self, *, take: bool = False) -> dict[str, Any]:
        """What ``GET /stats`` returns (``take``: the records are then forgotten)."""
        return stats_json(self.calls, len(self.live), take=take)

    async def close(self) -> None:
        """Stop listening, close open calls with 1001 and wait (bounded) until they end."""
        if self._server is not None:
            self._server.close()
        sockets = list(self.live)
        for socket in sockets:
            socket.close(CloseCode.GOING_AWAY, b"agent server shutting down")
        if sockets:
            waits = [asyncio.ensure_future(s.ended.wait()) for s in sockets]
            _, pending = await asyncio.wait(waits, timeout=CLOSE_TIMEOUT_S + 1)
            for wait in pending:
                wait.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    def _route(
        self, request: WSUpgradeRequest
    ) -> WSListener | WSUpgradeResponseWithListener | None:
        path = request.path.decode("latin-1").partition("?")[0]
        if path in ("/stats", "/stats/take"):
            # msgspec, not json, timing arrays as raw bytes, and a few records per take: a
            # soak's take of ~350 calls as JSON numbers stalled every call this server
            # carries for 0.5-0.9 s (docs/performance.md, sixth pass).
            body = msgspec.json.encode(self.stats(take=path == "/stats/take"))
            response = WSUpgradeResponse.create_ok_response(
                body, {"Content-Type": "application/json; charset=utf-8"}
            )
            return WSUpgradeResponseWithListener(response, None)
        prefix, _, agent_id = path.partition("/agents/")
        agent_id = unquote(agent_id)
        if prefix or not agent_id or "/" in agent_id:
            return None  # 404
        call_id = authorize(request.headers.get("Authorization", ""), self.config.secret, agent_id)
        if call_id is None:
            response = WSUpgradeResponse.create_error_response(
                401, b"401: Unauthorized", _UNAUTHORIZED_HEADERS
            )
            return WSUpgradeResponseWithListener(response, None)
        return _AgentSocket(self, AgentCall(self.config, self._factory, call_id, agent_id))


class _AgentSocket(WSListener):
    """One call's WebSocket (picows callbacks)."""

    def __init__(self, server: AgentServer, call: AgentCall) -> None:
        self._server = server
        self._call = call
        self._audio = call.audio  # one lookup less per frame
        self._transport: WSTransport | None = None
        self._assembler = MessageAssembler(MAX_AUDIO_BYTES)
        self._started = False
        self._closing = False
        """A close frame went or came: nothing more is written or read."""
        self._close_code: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.ended = asyncio.Event()

    def close(self, code: int, message: bytes = b"") -> None:
        """Our closing handshake; the gateway's answer (or a timeout) ends the connection."""
        transport = self._transport
        if transport is None or self._closing:
            return
        self._closing = True
        transport.send_close(WSCloseCode(code), message)
        self._arm(CLOSE_TIMEOUT_S, self._abort)

    # -- picows callbacks ----------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        peer = transport.underlying_transport.get_extra_info("peername")
        self._call.peer_port = int(peer[1]) if peer else None
        self._server.live.add(self)
        self._arm(self._server.config.start_timeout_s, self._no_start)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if (
            kind is _BINARY
            and frame.fin
            and self._started
            and not self._closing
            and not self._assembler.active
            and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
        ):
            self._write(self._audio(frame.get_payload_as_bytes()))  # caller audio
            return
        if kind is _CLOSE:
            self._on_close(transport, frame)
            return
        if self._closing or kind is _PING or kind is _PONG:
            return  # after a close; pings: picows answers them itself
        try:
            if frame.rsv1 or frame.rsv2 or frame.rsv3:  # RFC 6455 §5.2: no extension
                raise FatalViolation(
                    "a frame with RSV bits set",
                    reason="malformed",
                    close_code=CloseCode.PROTOCOL_ERROR,
                )
            payload = frame.get_payload_as_bytes()
            if frame.fin and kind is not _CONTINUATION and not self._assembler.active:
                self._on_message(kind is _BINARY, payload)
            elif whole := self._assembler.feed(kind.value, frame.fin, payload):
                self._on_message(whole[0] == _BINARY.value, whole[1])
        except FatalViolation as exc:
            self.close(exc.close_code)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._disarm()
        self._closing = True
        self._server.live.discard(self)
        record = self._call.end(
            self._close_code if self._close_code is not None else _NO_CLOSE_FRAME
        )
        if record is not None:
            self._server.calls.add(record)
        self.ended.set()

    # -- messages ------------------------------------------------------------------------

    def _on_message(self, binary: bool, data: bytes) -> None:
        call = self._call
        if not self._started:
            self._disarm()
            if call.begin(None if binary else decode_text(data)):
                self._started = True
            else:
                self.close(CloseCode.POLICY_VIOLATION, b"expected start")
            return
        if binary:
            self._write(call.audio(data))
            return
        reply, outputs = call.text(decode_text(data))
        if reply is not None and self._transport is not None:
            self._transport.send(_TEXT, reply)
        self._write(outputs)

    def _write(self, outputs: list[AgentItem]) -> None:
        transport = self._transport
        for item in outputs:
            if self._closing or transport is None:
                return
            wire = self._call.outgoing(item)
            transport.send(_BINARY if isinstance(wire, bytes) else _TEXT, wire)

    def _on_close(self, transport: WSTransport, frame: WSFrame) -> None:
        """The gateway's close frame, or its answer to ours: its code is the call's."""
        self._close_code = frame.get_close_code().value
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)
        self._closing = True
        self._disarm()
        transport.disconnect()

    # -- timers --------------------------------------------------------------------------

    def _no_start(self) -> None:
        self._timer = None
        if not self._started:
            self.close(CloseCode.POLICY_VIOLATION, b"expected start")

    def _abort(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.disconnect(graceful=False)

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
