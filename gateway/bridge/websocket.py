"""The WebSocket client of the agent protocol: :class:`WebSocketLink` (an edge).

One link per call, over a process-wide :class:`aiohttp.ClientSession` that the caller owns
(one connection pool, one DNS cache; a session per call would cost a pool per call).

* **Handshake.** ``Authorization: Bearer <JWT>`` (RFC 6750 §2.1) from
  :func:`~gateway.bridge.protocol.issue_agent_token`; no per-message compression
  (``compress=0``: audio does not compress, and deflate state costs memory per socket);
  the whole handshake plus ``start`` must complete within ``connect_timeout_s``.
* **One writer.** A single task drains the :class:`~gateway.bridge.link.OutgoingQueue`;
  nothing else writes to the socket while it runs (``close`` stops it first).
* **Strict reading** (docs/agent-protocol.md §6). Malformed JSON or fields, and bad audio
  frames, are answered with ``error`` and skipped; unknown types are counted and
  skipped. A text frame over 16 KiB is closed with 1009 and an unknown ``required``
  message with 1008 (RFC 6455 §7.4.1), and :class:`~gateway.errors.AgentError` is raised.
* **Size cap.** aiohttp's ``max_msg_size`` is twice the protocol's audio limit: a binary
  frame up to that size can be read, refused (``error``/``too_large``) and dropped as §6
  says; one beyond it cannot be read without buffering it, so aiohttp fails the
  connection with 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

import aiohttp
from yarl import URL

from gateway.bridge.link import (
    DEFAULT_MAX_QUEUED_FRAMES,
    AgentItem,
    AgentLink,
    LinkFailure,
    LinkStats,
    OutgoingQueue,
    check_sendable,
    not_open,
)
from gateway.bridge.protocol import (
    MAX_AUDIO_BYTES,
    Error,
    GatewayMessage,
    Hangup,
    ProtocolViolation,
    Start,
    Stop,
    UnknownMessage,
    check_audio_frame,
    decode_agent_message,
    encode_message,
    issue_agent_token,
)
from gateway.errors import AgentError, CloseCode

__all__ = ["WebSocketLink", "WebSocketSettings"]

log = logging.getLogger("gateway.bridge")

# RFC 6455 §7.4.1: the close code that goes with each fatal violation.
_FATAL_CLOSE = {
    ProtocolViolation.TOO_LARGE: CloseCode.MESSAGE_TOO_BIG,  # 1009
    ProtocolViolation.UNSUPPORTED: CloseCode.POLICY_VIOLATION,  # 1008
}
# Replies to bad agent messages wait behind at most this many control messages; beyond
# that an agent that floods us while not reading gets no more replies (still counted).
_MAX_PENDING_CONTROL = 32
# What aiohttp's own close codes mean to us when it fails the connection for us.
_AIOHTTP_FAILURE = {
    CloseCode.MESSAGE_TOO_BIG: ProtocolViolation.TOO_LARGE,
    CloseCode.INVALID_PAYLOAD: ProtocolViolation.MALFORMED,  # e.g. invalid UTF-8 text
    CloseCode.PROTOCOL_ERROR: ProtocolViolation.MALFORMED,
}


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """Tunables of the agent WebSocket client (seconds, frames, bytes)."""

    connect_timeout_s: float = 5.0
    """Connect + TLS + handshake + sending ``start`` (docs/agent-protocol.md §6: 5 s)."""
    heartbeat_s: float | None = 15.0
    """Ping period; no pong within half of it fails the link. ``None``: no pings."""
    flush_timeout_s: float = 2.0
    """How long ``close`` waits for queued caller audio to reach the agent."""
    close_timeout_s: float = 2.0
    """How long ``close`` waits for the agent's closing handshake before aborting."""
    max_queued_frames: int = DEFAULT_MAX_QUEUED_FRAMES
    """Caller audio frames held for a slow agent before the oldest is dropped."""
    max_message_bytes: int = 2 * MAX_AUDIO_BYTES
    """Largest frame read at all; beyond it the connection fails with 1009."""


class _State(Enum):
    NEW = auto()
    OPEN = auto()
    ENDED = auto()  # failed, or closed by us: receive() returns None from now on


class WebSocketLink(AgentLink):
    """An agent at a ``ws://``/``wss://`` URL, speaking ``rymi-agent/1``.

    Args:
        session: the process's shared client session (not closed by the link).
        url: the agent's WebSocket URL.
        secret: the agent's shared secret (>= 32 bytes), to sign the bearer token.
        settings: timeouts and limits.
        wall_clock: Unix time in seconds, for the token's ``iat``/``exp``.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        secret: bytes,
        *,
        settings: WebSocketSettings | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._url = URL(url)
        self._secret = secret
        self._settings = settings or WebSocketSettings()
        self._wall_clock = wall_clock
        self._queue = OutgoingQueue(self._settings.max_queued_frames)
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._writer: asyncio.Task[None] | None = None
        self._state = _State.NEW
        self._closing = False
        self._hung_up = False
        self._counts = {"sent": 0, "frames": 0, "messages": 0, "unknown": 0, "invalid": 0}

    def __repr__(self) -> str:
        return f"<WebSocketLink {self._url.host}:{self._url.port} {self._state.name}>"

    # -- AgentLink ---------------------------------------------------------------------

    async def open(self, start: Start) -> None:
        """Connect, authenticate and send ``start``; see :meth:`AgentLink.open`."""
        if self._state is not _State.NEW:
            raise AgentError("the agent link was already opened", reason="misuse")
        token = issue_agent_token(
            self._secret, agent_id=start.agent_id, call_id=start.call_id, now=self._wall_clock()
        )
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                self._ws = await self._connect(token)
                await self._ws.send_str(encode_message(start))
        except Exception as exc:
            await self.close()
            error = self._open_error(exc)
            if error is None:
                raise
            raise error from exc
        self._state = _State.OPEN
        self._drained.set()
        self._writer = asyncio.create_task(self._write_loop(self._ws), name="agent-writer")

    async def send_audio(self, pcm: bytes) -> None:
        """Queue caller audio; see :meth:`AgentLink.send_audio`."""
        if self._state is _State.OPEN and not self._closing:
            self._queue.put_audio(pcm)
            self._wake()
        elif self._state is _State.NEW:
            raise not_open()

    async def send(self, message: GatewayMessage) -> None:
        """Queue a control message ahead of audio; see :meth:`AgentLink.send`."""
        check_sendable(message)
        if self._state is _State.OPEN and not self._closing:
            self._queue.put_control(encode_message(message))
            self._wake()
        elif self._state is _State.NEW:
            raise not_open()

    async def receive(self) -> AgentItem | None:
        """The agent's next audio or message; see :meth:`AgentLink.receive`."""
        if self._state is _State.NEW:
            raise not_open()
        while self._state is _State.OPEN and self._ws is not None:
            msg = await self._ws.receive()
            item = await self._handle(msg)
            if item is not None:
                return item
        return None

    async def close(self, stop: Stop | None = None) -> None:
        """Flush, send ``stop``, close with 1000; see :meth:`AgentLink.close`."""
        if self._closing or self._ws is None:
            self._closing, self._state = True, _State.ENDED
            return
        self._closing = True
        ws = self._ws
        flushed = self._state is _State.OPEN and await self._flush()
        await self._stop_writer()
        self._state = _State.ENDED
        try:
            # Bounded: an agent that stopped reading can block even the close frame, and
            # when cancelled, aiohttp aborts the connection instead of waiting on it.
            async with asyncio.timeout(self._settings.close_timeout_s):
                if stop is not None and flushed and not ws.closed:
                    await ws.send_str(encode_message(stop))
                await ws.close(code=CloseCode.NORMAL)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            log.info("agent connection aborted at close (%s)", type(exc).__name__)

    def stats(self) -> LinkStats:
        """The link's counters now."""
        c = self._counts
        return LinkStats(
            sent_frames=c["sent"],
            dropped_frames=self._queue.dropped,
            queued_frames=self._queue.audio_frames,
            received_frames=c["frames"],
            received_messages=c["messages"],
            unknown_messages=c["unknown"],
            invalid_messages=c["invalid"],
        )

    # -- connecting ----------------------------------------------------------------------

    async def _connect(self, token: str) -> aiohttp.ClientWebSocketResponse:
        s = self._settings
        return await self._session.ws_connect(
            self._url,
            headers={aiohttp.hdrs.AUTHORIZATION: f"Bearer {token}"},
            compress=0,
            heartbeat=s.heartbeat_s,
            max_msg_size=s.max_message_bytes,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=s.close_timeout_s),
        )

    def _open_error(self, exc: Exception) -> AgentError | None:
        """The :class:`AgentError` for a failed open, or None for our own bugs."""
        where = f"agent at {self._url.host}:{self._url.port}"
        if isinstance(exc, aiohttp.WSServerHandshakeError):
            if exc.status in (401, 403):  # RFC 6750 §3.1: invalid_token
                return AgentError(
                    f"{where} refused our token (HTTP {exc.status})",
                    reason=ProtocolViolation.UNAUTHORIZED,
                )
            return AgentError(
                f"{where} refused the WebSocket handshake (HTTP {exc.status})",
                reason=LinkFailure.REFUSED,
            )
        if isinstance(exc, TimeoutError):
            return AgentError(
                f"{where} did not answer within {self._settings.connect_timeout_s} s",
                reason=LinkFailure.TIMEOUT,
            )
        if isinstance(exc, aiohttp.ClientError | OSError):
            return AgentError(
                f"{where} is unreachable ({type(exc).__name__})", reason=LinkFailure.UNREACHABLE
            )
        return None

    # -- writing -------------------------------------------------------------------------

    def _wake(self) -> None:
        self._drained.clear()
        self._wakeup.set()

    async def _write_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The socket's only writer: control first, then audio, until cancelled."""
        try:
            while True:
                item = self._queue.pop()
                if item is None:
                    self._drained.set()
                    self._wakeup.clear()
                    await self._wakeup.wait()
                elif isinstance(item, bytes):
                    await ws.send_bytes(item)  # waits while the agent's TCP window is full
                    self._counts["sent"] += 1
                else:
                    await ws.send_str(item)
        except (aiohttp.ClientError, ConnectionError) as exc:
            # The reader sees the broken connection and reports it; just stop writing.
            log.debug("agent writer stopped: %s", type(exc).__name__)
            self._queue.clear()
            self._drained.set()

    async def _flush(self) -> bool:
        """Wait (bounded) until the writer has sent everything queued; False on timeout."""
        try:
            async with asyncio.timeout(self._settings.flush_timeout_s):
                await self._drained.wait()
        except TimeoutError:
            log.warning(
                "agent did not take %d queued caller frames before close",
                self._queue.audio_frames,
            )
            return False
        return True

    async def _stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        self._queue.clear()

    # -- reading -------------------------------------------------------------------------

    async def _handle(self, msg: aiohttp.WSMessage) -> AgentItem | None:
        """Turn one WebSocket message into an item, or None to skip it; raise if fatal."""
        if msg.type is aiohttp.WSMsgType.BINARY:
            return self._audio(msg.data)
        if msg.type is aiohttp.WSMsgType.TEXT:
            return await self._control(msg.data)
        if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
            return None
        await self._ended(msg)
        return None

    def _audio(self, data: bytes) -> bytes | None:
        try:
            frame = check_audio_frame(data)
        except AgentError as exc:
            self._refuse(exc)
            return None
        self._counts["frames"] += 1
        return frame

    async def _control(self, text: str) -> AgentItem | None:
        try:
            message = decode_agent_message(text)
        except AgentError as exc:
            if exc.reason in _FATAL_CLOSE:
                await self._fail(exc, _FATAL_CLOSE[ProtocolViolation(exc.reason)])
            self._refuse(exc)
            return None
        if isinstance(message, UnknownMessage):
            self._counts["unknown"] += 1
            log.debug("skipped agent message of unknown type %r", message.type)
            return None
        self._counts["messages"] += 1
        if isinstance(message, Hangup):
            self._hung_up = True
        return message

    def _refuse(self, exc: AgentError) -> None:
        """Answer a bad but survivable message with ``error`` (docs §6) and skip it."""
        self._counts["invalid"] += 1
        log.debug("refused an agent message: %s", exc.reason)
        if not self._closing and self._queue.control_messages < _MAX_PENDING_CONTROL:
            self._queue.put_control(encode_message(Error(code=exc.reason, message=str(exc))))
            self._wake()

    async def _fail(self, exc: AgentError, code: int) -> None:
        """Fail the WebSocket connection (RFC 6455 §7.1.7) with ``code``, then raise."""
        self._state = _State.ENDED
        await self._stop_writer()
        if self._ws is not None:
            with contextlib.suppress(TimeoutError, aiohttp.ClientError, ConnectionError):
                async with asyncio.timeout(self._settings.close_timeout_s):
                    await self._ws.close(code=code, message=exc.reason.encode())
        log.warning("agent broke the protocol (%s); closed with %d", exc.reason, code)
        raise exc

    async def _ended(self, msg: aiohttp.WSMessage) -> None:
        """The socket is closing or closed: a normal end, or the agent's failure."""
        self._state = _State.ENDED
        if self._closing or self._hung_up:
            return
        await self._stop_writer()
        code = self._ws.close_code if self._ws is not None else None
        if msg.type is aiohttp.WSMsgType.ERROR and code in _AIOHTTP_FAILURE:
            reason: str = _AIOHTTP_FAILURE[CloseCode(code)]
        else:
            reason = LinkFailure.CLOSED
        log.warning("agent connection ended before stop (%s, close code %s)", reason, code)
        raise AgentError(
            f"the agent closed the connection before stop (code {code})", reason=reason
        )
