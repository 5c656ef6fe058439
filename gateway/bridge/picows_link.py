"""The picows WebSocket client of the agent protocol: :class:`PicowsLink` (an edge).

The default link to an agent at a ``ws://``/``wss://`` URL: the contract and rules of the
aiohttp :class:`~gateway.bridge.websocket.WebSocketLink` (:mod:`gateway.bridge.wsclient`)
for less CPU per message. picows parses and masks frames in C and calls us per frame:

* **Writing**, with no writer task (:class:`~gateway.bridge.picows_writer.PicowsWriter`):
  ``send_audio`` writes at once (on an idle socket, one ``send()`` system call) unless
  something is queued or the transport is paused for writing; then the bounded queue
  (oldest dropped) holds it until the transport's ``resume_writing`` drains it.
* **Reading**, with no task wake-up per frame: each frame is checked and counted
  (:class:`~gateway.bridge.wsclient.AgentReader`) and handed to an
  :class:`~gateway.bridge.inbox.Inbox` (the sink, or ``receive()``);
  ``pause_reading`` pauses the TCP transport.
* **Handshake**: bearer token, no extensions, no redirects (the token is for this URL
  only), all within ``connect_timeout_s``; an open cancelled mid-upgrade leaves the
  socket to picows's own handshake timer (the same timeout). **Heartbeat**: picows's
  auto-ping; no pong and picows closes (1001), and the link fails as ``agent_closed``.
* **Frames**: picows hands over raw frames, so fragmented messages are reassembled here
  (:class:`~gateway.bridge.wsclient.MessageAssembler`), and a frame with RSV bits set
  fails the connection (1002, no extension was negotiated). A frame over
  ``max_message_bytes`` is refused from its header, before it is buffered (1009).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from enum import Enum, auto

from picows import (
    WSCloseCode,
    WSFrame,
    WSHandshakeError,
    WSInvalidURL,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)
from picows.picows import WSCloseHandshake
from yarl import URL

from gateway.bridge.inbox import Inbox
from gateway.bridge.link import (
    AgentItem,
    AgentLink,
    LinkFailure,
    LinkStats,
    check_sendable,
    not_open,
)
from gateway.bridge.picows_writer import PicowsWriter
from gateway.bridge.protocol import (
    GatewayMessage,
    ProtocolViolation,
    Start,
    Stop,
    encode_message,
    issue_agent_token,
)
from gateway.bridge.wsclient import (
    FAILURE_BY_CLOSE_CODE,
    AgentReader,
    FatalViolation,
    MessageAssembler,
    WebSocketSettings,
    closed_early,
    connect_timed_out,
    decode_text,
    handshake_refused,
    unreachable,
)
from gateway.errors import AgentError, CloseCode

__all__ = ["PicowsLink"]

log = logging.getLogger("gateway.bridge")

_BINARY, _TEXT, _CONTINUATION = WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION
_NO_STATUS = 1005  # RFC 6455 §7.1.5: a close frame without a code
_NO_CLOSE_FRAME = 1006  # RFC 6455 §7.1.5: the connection closed without a close frame


class _State(Enum):
    NEW = auto()
    CONNECTING = auto()  # the agent may already be talking; nothing is written yet
    OPEN = auto()
    ENDED = auto()  # failed, the agent left, or we closed: nothing more is read or written


# Module constants: an enum member looked up on its class costs ~0.2 µs (Python 3.11),
# and the frame path would pay it several times per frame.
_NEW, _CONNECTING, _OPEN, _ENDED = _State.NEW, _State.CONNECTING, _State.OPEN, _State.ENDED
_CLOSE, _PING, _PONG = WSMsgType.CLOSE, WSMsgType.PING, WSMsgType.PONG


class PicowsLink(AgentLink):
    """An agent at a ``ws://``/``wss://`` URL, speaking ``rymi-agent/1``, over picows.

    Args:
        url: the agent's WebSocket URL.
        secret: the agent's shared secret (>= 32 bytes), to sign the bearer token.
        settings: timeouts and limits.
        wall_clock: Unix time in seconds, for the token's ``iat``/``exp``.
        ssl_context: for ``wss://`` (default: the system's trust store).
    """

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        settings: WebSocketSettings | None = None,
        wall_clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._url = url
        parsed = URL(url)
        self._where = f"agent at {parsed.host}:{parsed.port}"
        self._secret = secret
        self._settings = settings or WebSocketSettings()
        self._wall_clock = wall_clock
        self._ssl_context = ssl_context
        self._out = PicowsWriter(self._settings.max_queued_frames)
        self._reader = AgentReader(self._out.reply)
        self._inbox = Inbox()
        self._transport: WSTransport | None = None
        self._state = _NEW
        self._closing = False
        self._assembler = MessageAssembler(self._settings.max_message_bytes)

    def __repr__(self) -> str:
        return f"<PicowsLink {self._where} {self._state.name}>"

    # -- AgentLink ---------------------------------------------------------------------

    async def open(self, start: Start) -> None:
        """Connect, authenticate and send ``start``; see :meth:`AgentLink.open`."""
        if self._state is not _NEW:
            raise AgentError("the agent link was already opened", reason="misuse")
        token = issue_agent_token(
            self._secret, agent_id=start.agent_id, call_id=start.call_id, now=self._wall_clock()
        )
        self._state = _CONNECTING
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                transport, listener = await self._connect(token)
        except Exception as exc:
            self._abandon()
            error = self._open_error(exc)
            if error is None:
                raise
            raise error from exc
        except asyncio.CancelledError:
            self._abandon()
            raise
        if listener is None:  # picows returns no listener when the agent hung up mid-upgrade
            self._abandon()
            raise unreachable(self._where, ConnectionResetError("closed during the handshake"))
        self._transport = transport
        if self._inbox.paused:
            transport.underlying_transport.pause_reading()
        transport.send(_TEXT, encode_message(start))
        if self._state is _CONNECTING:  # (the agent may have failed us meanwhile)
            self._state = _OPEN
            self._out.start(transport)  # first the replies to what came before start

    def send_audio(self, pcm: bytes) -> None:
        """Write caller audio now, or queue it; see :meth:`AgentLink.send_audio`."""
        if self._state is _NEW:
            raise not_open()
        self._out.audio(pcm)

    def audio_sender(self) -> Callable[[bytes], None]:
        """The writer's own ``audio`` (see :meth:`AgentLink.audio_sender`)."""
        if self._state is _NEW:
            raise not_open()
        return self._out.audio

    def send(self, message: GatewayMessage) -> None:
        """Write a control message now, or ahead of queued audio; see :meth:`AgentLink.send`."""
        check_sendable(message)
        if self._state is _NEW:
            raise not_open()
        self._out.control(encode_message(message))

    async def receive(self) -> AgentItem | None:
        """The agent's next audio or message; see :meth:`AgentLink.receive`."""
        if self._state is _NEW:
            raise not_open()
        return await self._inbox.get()

    def pause_reading(self) -> None:
        """Pause the TCP transport; see :meth:`AgentLink.pause_reading`."""
        self._inbox.pause()
        if self._transport is not None:
            self._transport.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        """Deliver what was held, read again; see :meth:`AgentLink.resume_reading`."""
        if self._transport is not None:
            self._transport.underlying_transport.resume_reading()
        self._inbox.resume(self._audio_sink)  # the sink may pause again: that pauses TCP

    async def close(self, stop: Stop | None = None) -> None:
        """Flush, send ``stop``, close with 1000; see :meth:`AgentLink.close`."""
        transport = self._transport
        if self._closing or transport is None:  # a second close, or never connected
            self._closing = True
            self._end()
            self._inbox.close()
            return
        self._closing = True
        self._out.stop()  # from now on send_audio and send are no-ops
        flushed = self._state is _OPEN and await self._out.flush(self._settings.flush_timeout_s)
        if self._end():  # still open: the normal close (RFC 6455 §7.1.2)
            if stop is not None and flushed:
                transport.send(_TEXT, encode_message(stop))
            transport.send_close(WSCloseCode.OK)
        self._inbox.close()
        if not await _disconnected(transport, self._settings.close_timeout_s):
            log.info("agent did not complete the closing handshake; connection aborted")
            transport.disconnect(graceful=False)
            await _disconnected(transport, self._settings.close_timeout_s)

    def stats(self) -> LinkStats:
        """The link's counters now."""
        return self._reader.stats(self._out.queue, self._out.sent)

    # -- connecting ----------------------------------------------------------------------

    async def _connect(self, token: str) -> tuple[WSTransport, WSListener | None]:
        s = self._settings
        heartbeat = s.heartbeat_s or 0.0
        return await ws_connect(
            lambda: _Listener(self, self._out),
            self._url,
            ssl_context=self._ssl_context,
            websocket_handshake_timeout=s.connect_timeout_s,
            enable_auto_ping=s.heartbeat_s is not None,
            auto_ping_idle_timeout=heartbeat,
            auto_ping_reply_timeout=heartbeat / 2,
            max_frame_size=s.max_message_bytes,
            extra_headers={"Authorization": f"Bearer {token}"},
            max_redirects=0,
        )

    def _open_error(self, exc: Exception) -> AgentError | None:
        """The :class:`AgentError` for a failed open, or None for our own bugs."""
        if isinstance(exc, WSHandshakeError):
            response = exc.response
            return handshake_refused(self._where, int(response.status) if response else None)
        if isinstance(exc, TimeoutError):
            return connect_timed_out(self._where, self._settings.connect_timeout_s)
        if isinstance(exc, OSError | WSInvalidURL):
            return unreachable(self._where, exc)
        return None

    def _abandon(self) -> None:
        """A failed open: end the link, abort the socket if there is one already."""
        self._end()
        self._inbox.close()
        if self._transport is not None:
            self._transport.disconnect(graceful=False)

    def _end(self) -> bool:
        """Enter ENDED: write nothing more, drop what is queued. True if it was open."""
        was_open = self._state is _OPEN
        self._state = _ENDED
        self._out.end()
        return was_open

    # -- reading (picows callbacks, through _Listener) -------------------------------------

    def _on_connected(self, transport: WSTransport) -> None:
        self._transport = transport  # before any frame: replies and failures need it

    def _on_frame(self, frame: WSFrame) -> None:
        try:
            kind = frame.msg_type
            if kind is _CLOSE:
                self._on_close(frame)
            elif kind is _PING or kind is _PONG or self._state is _ENDED:
                return  # (picows answers pings itself)
            elif frame.rsv1 or frame.rsv2 or frame.rsv3:  # RFC 6455 §5.2: no extension
                raise FatalViolation(
                    "the agent sent a frame with RSV bits set",
                    reason=ProtocolViolation.MALFORMED,
                    close_code=CloseCode.PROTOCOL_ERROR,
                )
            elif kind is _BINARY and frame.fin and not self._assembler.active:  # audio
                pcm = self._reader.audio(frame.get_payload_as_bytes())
                if pcm is not None:
                    self._inbox.put_audio(pcm, self._audio_sink)
            elif frame.fin and kind is not _CONTINUATION and not self._assembler.active:
                self._on_message(kind is _BINARY, frame.get_payload_as_bytes())
            elif whole := self._assembler.feed(kind.value, frame.fin, frame.get_payload_as_bytes()):
                self._on_message(whole[0] == _BINARY.value, whole[1])
        except FatalViolation as exc:
            self._fail(exc, exc.close_code, exc.reason)
        except Exception as exc:  # our bug or the sink's: end the link, the engine sees it
            log.exception("agent link failed on a frame")
            self._fail(exc, CloseCode.INTERNAL_ERROR, "internal error")

    def _on_message(self, binary: bool, data: bytes) -> None:
        if binary:
            pcm = self._reader.audio(data)
            if pcm is not None:
                self._inbox.put_audio(pcm, self._audio_sink)
        elif (message := self._reader.text(decode_text(data))) is not None:
            self._inbox.put_message(message)

    def _on_close(self, frame: WSFrame) -> None:
        """The agent's closing handshake: echo it (RFC 6455 §5.5.1), hang up, report."""
        code, transport = frame.get_close_code(), self._transport
        if transport is None:
            return
        failed = _failure_code(transport)  # (before our echo sets one)
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK if code is WSCloseCode.NO_INFO else code)
        transport.disconnect()
        self._agent_left(code.value or _NO_STATUS, failed)

    def _on_disconnected(self, transport: WSTransport) -> None:
        self._agent_left(_NO_CLOSE_FRAME, _failure_code(transport))

    def _agent_left(self, code: int, failed: int | None) -> None:
        """The connection is ending, not by our doing (``failed``: picows's close code)."""
        if self._state is _ENDED:
            return  # we closed or failed it: already reported
        self._end()
        if self._reader.hung_up:
            self._inbox.finish()
        elif failed is not None:  # a frame too big, broken framing, no pong
            self._inbox.fail(
                closed_early(failed, FAILURE_BY_CLOSE_CODE.get(failed, LinkFailure.CLOSED))
            )
        else:
            self._inbox.fail(closed_early(code))

    def _fail(self, exc: BaseException, code: int, why: str) -> None:
        """Fail the WebSocket connection (RFC 6455 §7.1.7) with ``code``; report ``exc``."""
        if self._state is _ENDED:
            return
        self._end()
        transport = self._transport
        if transport is not None:
            transport.send_close(WSCloseCode(code), why.encode())
            transport.disconnect()  # graceful: the close frame goes out first
        log.warning("agent link failed (%s); closed with %d", why, code)
        self._inbox.fail(exc)


class _Listener(WSListener):
    """picows's callbacks, forwarded to the link."""

    def __init__(self, link: PicowsLink, writer: PicowsWriter) -> None:
        self._link = link
        self._writer = writer
        self._on_frame = link._on_frame  # one lookup less per frame

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._link._on_connected(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self._on_frame(frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._link._on_disconnected(transport)

    def pause_writing(self) -> None:
        self._writer.pause()

    def resume_writing(self) -> None:
        self._writer.resume()


def _failure_code(transport: WSTransport) -> int | None:
    """The close code picows sent on its own, failing the connection; None if it did not.

    Whenever the link closes, it enters ENDED first: a close frame sent while the link
    is not ENDED is picows's.
    """
    handshake: WSCloseHandshake | None = transport.close_handshake  # None until a close
    sent = handshake.sent if handshake is not None else None
    return None if sent is None else sent.code.value


async def _disconnected(transport: WSTransport, timeout_s: float) -> bool:
    """Wait (bounded) until the connection is gone; False on timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            await transport.wait_disconnected()
    except TimeoutError:
        return False
    except Exception as exc:  # what picows failed the connection for: already reported
        log.debug("agent connection ended by %s", type(exc).__name__)
    return True
