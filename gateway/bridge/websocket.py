"""The aiohttp WebSocket client of the agent protocol: :class:`WebSocketLink` (an edge).

The fallback to :class:`~gateway.bridge.picows_link.PicowsLink` (``transport="aiohttp"``
in :func:`~gateway.bridge.make_link`), kept for side-by-side measurement: same contract,
same rules (:mod:`gateway.bridge.wsclient`), more CPU per message. One link per call, over
a process-wide :class:`aiohttp.ClientSession` that the caller owns (one connection pool,
one DNS cache; a session per call would cost a pool per call).

* **Handshake.** ``Authorization: Bearer <JWT>`` (RFC 6750 §2.1) from
  :func:`~gateway.bridge.protocol.issue_agent_token`; no per-message compression
  (``compress=0``: audio does not compress, and deflate state costs memory per socket);
  the whole handshake plus ``start`` must complete within ``connect_timeout_s``.
* **One writer.** A single task drains the :class:`~gateway.bridge.link.OutgoingQueue`;
  nothing else writes to the socket while it runs (``close`` stops it first).
* **Reading happens in** ``receive()``: the audio sink is called from there, and
  ``pause_reading`` makes it stop taking messages from aiohttp's buffer (which pauses
  the transport once it holds 512 KiB).
* **Size cap.** aiohttp's ``max_msg_size`` is ``max_message_bytes``, twice the protocol's
  audio limit: a binary message up to that size can be read, refused (``error``/
  ``too_large``) and dropped as §6 says; one beyond it cannot be read without buffering
  it, so aiohttp fails the connection with 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from enum import Enum, auto
from typing import NoReturn

import aiohttp
from yarl import URL

from gateway.bridge.link import (
    AgentItem,
    AgentLink,
    LinkStats,
    OutgoingQueue,
    check_sendable,
    not_open,
)
from gateway.bridge.protocol import (
    GatewayMessage,
    Start,
    Stop,
    encode_message,
    issue_agent_token,
)
from gateway.bridge.wsclient import (
    FAILURE_BY_CLOSE_CODE,
    MAX_PENDING_REPLIES,
    AgentReader,
    FatalViolation,
    WebSocketSettings,
    closed_early,
    connect_timed_out,
    handshake_refused,
    unreachable,
)
from gateway.errors import AgentError, CloseCode

__all__ = ["WebSocketLink", "WebSocketSettings"]

log = logging.getLogger("gateway.bridge")


class _State(Enum):
    NEW = auto()
    OPEN = auto()
    ENDED = auto()  # failed, or closed by us: receive() returns None from now on


class WebSocketLink(AgentLink):
    """An agent at a ``ws://``/``wss://`` URL, speaking ``rymi-agent/1``, over aiohttp.

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
        self._reader = AgentReader(self._reply)
        self._sent = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._writer: asyncio.Task[None] | None = None
        self._state = _State.NEW
        self._closing = False

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

    def send_audio(self, pcm: bytes) -> None:
        """Queue caller audio for the writer; see :meth:`AgentLink.send_audio`."""
        if self._state is _State.OPEN and not self._closing:
            self._queue.put_audio(pcm)
            self._wake()
        elif self._state is _State.NEW:
            raise not_open()

    def send(self, message: GatewayMessage) -> None:
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
            if not self._resumed.is_set():
                await self._resumed.wait()
                continue
            item = await self._handle(await self._ws.receive())
            if item is None:
                continue
            if not self._resumed.is_set():  # paused while that message was on its way
                await self._resumed.wait()
                if self._closing:
                    return None  # closed meanwhile: nobody wants it
            sink = self._audio_sink
            if sink is None or not isinstance(item, bytes):
                return item
            try:
                sink(item)
            except Exception as exc:  # the engine's bug: end the link, and let it see it
                await self._fail(exc, CloseCode.INTERNAL_ERROR, "audio sink failed")
        return None

    def pause_reading(self) -> None:
        """Stop taking agent messages; see :meth:`AgentLink.pause_reading`."""
        self._resumed.clear()

    def resume_reading(self) -> None:
        """Take agent messages again; see :meth:`AgentLink.resume_reading`."""
        self._resumed.set()

    async def close(self, stop: Stop | None = None) -> None:
        """Flush, send ``stop``, close with 1000; see :meth:`AgentLink.close`."""
        self._resumed.set()  # a paused receive() sees the end
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
        return self._reader.stats(self._queue, self._sent)

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
            return handshake_refused(where, exc.status)
        if isinstance(exc, TimeoutError):
            return connect_timed_out(where, self._settings.connect_timeout_s)
        if isinstance(exc, aiohttp.ClientError | OSError):
            return unreachable(where, exc)
        return None

    # -- writing -------------------------------------------------------------------------

    def _wake(self) -> None:
        self._drained.clear()
        self._wakeup.set()

    def _reply(self, text: str) -> None:
        """Queue an ``error`` reply to a bad agent message, within the bound."""
        if not self._closing and self._queue.control_messages < MAX_PENDING_REPLIES:
            self._queue.put_control(text)
            self._wake()

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
                    self._sent += 1
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
            return self._reader.audio(msg.data)
        if msg.type is aiohttp.WSMsgType.TEXT:
            try:
                return self._reader.text(msg.data)
            except FatalViolation as exc:
                await self._fail(exc, exc.close_code, exc.reason)
        if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
            return None
        await self._ended(msg)
        return None

    async def _fail(self, exc: Exception, code: int, why: str) -> NoReturn:
        """Fail the WebSocket connection (RFC 6455 §7.1.7) with ``code``, then raise."""
        self._state = _State.ENDED
        await self._stop_writer()
        if self._ws is not None:
            with contextlib.suppress(TimeoutError, aiohttp.ClientError, ConnectionError):
                async with asyncio.timeout(self._settings.close_timeout_s):
                    await self._ws.close(code=code, message=why.encode())
        log.warning("agent link failed (%s); closed with %d", why, code)
        raise exc

    async def _ended(self, msg: aiohttp.WSMessage) -> None:
        """The socket is closing or closed: a normal end, or the agent's failure."""
        self._state = _State.ENDED
        if self._closing or self._reader.hung_up:
            return
        await self._stop_writer()
        code = self._ws.close_code if self._ws is not None else None
        if msg.type is aiohttp.WSMsgType.ERROR and code in FAILURE_BY_CLOSE_CODE:
            raise closed_early(code, FAILURE_BY_CLOSE_CODE[code])
        raise closed_early(code)
