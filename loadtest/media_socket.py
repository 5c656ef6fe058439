"""One call's media WebSocket in the carrier's role: picows callbacks, no task per frame.

The per-frame work of the load tester is most of its CPU, and every call does it 50
times a second each way, so this path is kept to what the measurement needs:

* **Sending**: one timer callback per frame (``loop.call_at`` on the
  :class:`~loadtest.schedule.FrameClock` deadline), which writes the carrier's message
  at once (picows masks it in C; one ``send()`` system call), stamps its send time and
  lateness, and advances the carrier's playback buffer. A late callback sends the frames
  that are due back to back, as the carrier's clock would have had them out: the
  schedule never drifts. No coroutine, future or task is made per frame.
* **Receiving**: picows parses each frame in C and calls :meth:`CarrierSocket.on_ws_frame`
  from the socket's read callback, where the receive time is stamped; the audio of a
  Twilio ``media`` / Plivo ``playAudio`` message is decoded by one msgspec decoder
  (base64 in C). Everything then goes through the carrier side (``receive``: marks,
  clears) as before, its replies written at once.

The closing handshake is aiohttp's, which the tester used before: the gateway's close
frame is answered with 1000 and its code recorded; ours (1000, after the carrier's stop
messages) waits for the gateway's answer, whose code is recorded; a connection that ends
without a close frame records 1006 (RFC 6455 §7.1.5). Messages that arrive after our
close frame are not accounted (the call is over for the carrier). A message that the
carrier side rejects, or that cannot be decoded, ends the reading of the call: the
sender stops at its next frame, as when the reader task of an aiohttp socket failed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from gateway.carriers import CarrierSide, WireMessage
from loadtest.audio import CarrierAudio
from loadtest.schedule import FRAME_S, FrameClock

if TYPE_CHECKING:
    from loadtest.player import CallResult

__all__ = ["CarrierSocket", "play_media", "text_audio"]

_TEXT, _BINARY, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE
_ABNORMAL = 1006  # RFC 6455 §7.1.5: the connection closed without a close frame
_MAX_MESSAGE = 1 << 20
_HANDSHAKE_TIMEOUT_S = 300.0  # as aiohttp's session allowed: an overloaded gateway is slow
_CLOSE_TIMEOUT_S = 10.0  # for the gateway to answer our close frame


class _Media(msgspec.Struct):
    payload: bytes = b""  # base64 in JSON, decoded by msgspec in C


class _Message(msgspec.Struct):
    event: str = ""
    media: _Media | None = None


_DECODER = msgspec.json.Decoder(_Message)


def text_audio(text: str, result: CallResult) -> bytes | None:
    """The μ-law audio of a Twilio ``media`` / Plivo ``playAudio`` message; counts the rest.

    A message of an unexpected shape (``media`` not an object, a payload that is not
    strict base64) takes the general path: ``json`` and lenient base64, as a carrier's
    parser would.
    """
    try:
        message = _DECODER.decode(text)
    except msgspec.DecodeError:
        return _general_text_audio(text, result)
    event = message.event
    if event == "media" or event == "playAudio":
        return message.media.payload if message.media is not None else None
    if event == "clear" or event == "clearAudio":
        result.clears += 1
    elif event == "mark" or event == "checkpoint":
        result.marks += 1
    return None


def _general_text_audio(text: str, result: CallResult) -> bytes | None:
    message: Mapping[str, object] = json.loads(text)
    event = message.get("event")
    if event in ("media", "playAudio"):
        media = message.get("media")
        if isinstance(media, dict):
            return base64.b64decode(media.get("payload", ""))
    elif event in ("clear", "clearAudio"):
        result.clears += 1
    elif event in ("mark", "checkpoint"):
        result.marks += 1
    return None


async def play_media(
    url: str,
    headers: Mapping[str, str],
    side: CarrierSide,
    result: CallResult,
    audio: CarrierAudio,
    *,
    keep: int,
    stopping: Callable[[], bool],
) -> None:
    """Stream a call's media at ``url`` (the signed upgrade ``headers``) as the carrier.

    The carrier's ``open`` messages, then frame ``k`` of ``audio`` at the ``k``-th
    deadline of a :class:`~loadtest.schedule.FrameClock` for the planned duration, the
    carrier's playback advancing meanwhile; then its ``stop`` messages and a normal close.
    ``keep``: bytes of heard audio kept for the content check.

    Raises:
        picows.WSError: the gateway refused the upgrade.
        OSError, TimeoutError: no connection.
    """
    transport, socket = await _connect(url, headers, side, result, keep)
    try:
        for message in side.open():
            socket.send(message)
        loop = asyncio.get_running_loop()
        result.opened_at = time.monotonic()
        frames = math.ceil(result.plan.duration_s / FRAME_S)
        result.completed = await socket.play(audio, frames, FrameClock(loop.time()), stopping)
        result.ended_at = time.monotonic()
        if not socket.closed:
            for message in side.stop():
                socket.send(message)
            socket.close()
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await transport.wait_disconnected()
        if not transport.is_disconnected:
            transport.disconnect(graceful=False)
        result.close_code = socket.close_code if socket.close_code is not None else _ABNORMAL
        if result.completed and socket.failure is not None:
            result.error = f"reader: {socket.failure!r}"[:200]


async def _connect(
    url: str, headers: Mapping[str, str], side: CarrierSide, result: CallResult, keep: int
) -> tuple[WSTransport, CarrierSocket]:
    transport, listener = await ws_connect(
        lambda: CarrierSocket(side, result, keep),
        url,
        extra_headers=dict(headers),
        max_frame_size=_MAX_MESSAGE,
        websocket_handshake_timeout=_HANDSHAKE_TIMEOUT_S,
        max_redirects=0,
    )
    if not isinstance(listener, CarrierSocket):  # the gateway hung up mid-upgrade
        transport.disconnect(graceful=False)
        raise ConnectionResetError("closed during the WebSocket handshake")
    return transport, listener


class CarrierSocket(WSListener):
    """A call's media socket: what the gateway sends, and the caller's frames on time."""

    def __init__(self, side: CarrierSide, result: CallResult, keep: int) -> None:
        self.side = side
        self.result = result
        self.keep = keep
        self.transport: WSTransport | None = None
        self.closed = False
        """A close frame came or went, or the connection ended."""
        self.close_code: int | None = None
        self.failure: BaseException | None = None
        """Why reading stopped early (the carrier side rejected a message, say)."""

    # -- writing -------------------------------------------------------------------------

    def send(self, message: WireMessage) -> None:
        """Write one carrier message now (picows buffers it if the socket is busy)."""
        if self.transport is not None and not self.closed:
            self.transport.send(_TEXT if isinstance(message, str) else _BINARY, message)

    def close(self) -> None:
        """Our closing handshake (1000); the gateway's answer ends the connection."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.send_close(WSCloseCode.OK)

    async def play(
        self,
        audio: CarrierAudio,
        frames: int,
        clock: FrameClock,
        stopping: Callable[[], bool],
    ) -> bool:
        """Send ``frames`` frames of ``audio`` on ``clock``; True if all went out.

        Stops early (False) when the socket closes, reading fails or ``stopping()``.
        """
        sender = _FrameSender(self, audio, frames, clock, stopping)
        try:
            sender.tick()  # frame 0 is due now
            return await sender.done
        finally:
            sender.cancel()

    # -- reading (picows callbacks) ------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        name = transport.underlying_transport.get_extra_info("sockname")
        self.result.local_port = int(name[1]) if name else None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        at = time.monotonic()
        kind = frame.msg_type
        if kind is _CLOSE:
            self._on_close(transport, frame)
            return
        if self.closed or self.failure is not None or (kind is not _TEXT and kind is not _BINARY):
            return  # after a close, or a ping/pong (picows answers pings itself)
        try:
            if not frame.fin:
                raise ValueError("a fragmented message (the gateway sends whole messages)")
            result = self.result
            data: WireMessage
            if kind is _TEXT:
                data = text = frame.get_payload_as_utf8_text()
                payload = text_audio(text, result)
                samples = 0 if payload is None else len(payload)
            else:
                data = payload = frame.get_payload_as_bytes()  # Vonage: raw L16
                samples = len(payload) // 2
            if payload is not None:
                result.received_at.append(at)
                result.received_samples.append(samples)
                if len(result.heard) < self.keep:
                    result.heard.extend(payload)
            for reply in self.side.receive(data):
                self.send(reply)
        except Exception as exc:  # the gateway's message broke the carrier: recorded
            self.failure = exc

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        if self.close_code is None:
            self.close_code = _ABNORMAL

    def _on_close(self, transport: WSTransport, frame: WSFrame) -> None:
        """The gateway's close frame: its code is the call's; answered with 1000."""
        self.close_code = frame.get_close_code().value
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)
        self.closed = True
        transport.disconnect()


class _FrameSender:
    """The caller's frames, one timer callback per frame deadline."""

    def __init__(
        self,
        socket: CarrierSocket,
        audio: CarrierAudio,
        frames: int,
        clock: FrameClock,
        stopping: Callable[[], bool],
    ) -> None:
        self.socket = socket
        self.side = socket.side
        self.frames = audio.frames
        self.count = frames
        self.clock = clock
        self.stopping = stopping
        self.loop = loop = asyncio.get_running_loop()
        self.done: asyncio.Future[bool] = loop.create_future()
        self.sent_at = socket.result.sent_at
        self.lateness_ms = socket.result.lateness_ms
        self.next = 0
        self.played_ms = 0
        self.timer: asyncio.TimerHandle | None = None

    def tick(self) -> None:
        """Send every frame due now, then wait for the next deadline."""
        self.timer = None
        loop, clock, socket, side = self.loop, self.clock, self.socket, self.side
        k = self.next
        if k >= self.count:
            self.stop(True)
            return
        while True:
            if socket.closed or socket.failure is not None or self.stopping():
                self.stop(False)
                return
            now = loop.time()
            socket.send(side.audio(self.frames[k % len(self.frames)]))
            self.sent_at.append(time.monotonic())
            self.lateness_ms.append(clock.lateness(k, now) * 1000)
            # The carrier plays what it buffered in real time: 20 ms steps of the wall.
            step = int((now - clock.start) * 1000) // 20 * 20 - self.played_ms
            if step > 0:
                self.played_ms += step
                for reply in side.advance(step):
                    socket.send(reply)
                side.take_played()
            k += 1
            if k >= self.count:
                self.stop(True)
                return
            self.next = k
            deadline = clock.deadline(k)
            if deadline > loop.time():
                self.timer = loop.call_at(deadline, self.tick)
                return

    def stop(self, completed: bool) -> None:
        """End the sending (``completed``: every frame went out)."""
        self.cancel()
        if not self.done.done():
            self.done.set_result(completed)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
