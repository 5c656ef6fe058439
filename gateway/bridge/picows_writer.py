"""The gateway → agent direction of the picows link: :class:`PicowsWriter`.

There is no writer task. A frame is written in the caller's own call
(``WSTransport.send``: on an idle socket, one ``send()`` system call) while the transport
takes writes and nothing waits before it. Otherwise it waits in the bounded
:class:`~gateway.bridge.link.OutgoingQueue` (control first, the oldest audio dropped
when full) until the transport calls ``resume_writing``: asyncio does once its buffer is
back under the low-water mark, and the queue is drained then.
"""

from __future__ import annotations

import asyncio
import logging

from picows import WSMsgType, WSTransport

from gateway.bridge.link import OutgoingQueue
from gateway.bridge.wsclient import MAX_PENDING_REPLIES

__all__ = ["PicowsWriter"]

log = logging.getLogger("gateway.bridge")

_BINARY, _TEXT = WSMsgType.BINARY, WSMsgType.TEXT


class PicowsWriter:
    """Writes one link's frames to its picows transport, at once or through a queue.

    Its life: before :meth:`start` only replies are taken, and queued (``start`` must be
    the first message); then frames are written at once while possible; after
    :meth:`stop` (the link is closing) nothing new is taken but the queue still drains;
    after :meth:`end` nothing more is written.

    Args:
        max_queued_frames: caller audio frames held before the oldest is dropped.
    """

    def __init__(self, max_queued_frames: int) -> None:
        self.queue = OutgoingQueue(max_queued_frames)
        self.sent = 0
        """Caller audio frames handed to the transport."""
        self.direct = False
        """Write at once: started, not stopped, the transport takes writes, nothing queued."""
        self._transport: WSTransport | None = None
        self._writable = True  # the transport is under its high-water mark
        self._started = self._stopped = self._ended = False
        self._flushed: asyncio.Future[None] | None = None

    def start(self, transport: WSTransport) -> None:
        """``start`` has been written: write what was queued, then write directly."""
        self._transport = transport
        self._started = True
        self._drain()

    def audio(self, pcm: bytes) -> None:
        """Write a caller audio frame, or queue it (see the module docstring)."""
        if self.direct:
            self._transport.send(_BINARY, pcm)  # type: ignore[union-attr]  # set when direct
            self.sent += 1
        elif self._started and not (self._stopped or self._ended):
            self.queue.put_audio(pcm)

    def control(self, text: str) -> None:
        """Write an encoded control message, or queue it ahead of queued audio."""
        if self.direct:
            self._transport.send(_TEXT, text)  # type: ignore[union-attr]  # set when direct
        elif self._started and not (self._stopped or self._ended):
            self.queue.put_control(text)

    def reply(self, text: str) -> None:
        """Write an ``error`` reply to a bad agent message; queue at most a few."""
        if self.direct:
            self._transport.send(_TEXT, text)  # type: ignore[union-attr]  # set when direct
        elif not (self._stopped or self._ended) and (
            self.queue.control_messages < MAX_PENDING_REPLIES
        ):
            self.queue.put_control(text)

    def pause(self) -> None:
        """The transport is over its high-water mark: queue from now on."""
        self._writable = self.direct = False

    def resume(self) -> None:
        """The transport is back under its low-water mark: drain the queue."""
        self._writable = True
        self._drain()

    def stop(self) -> None:
        """The link is closing: take nothing new; what is queued still goes."""
        self._stopped = True
        self.direct = False

    def end(self) -> None:
        """Write nothing more: drop what is queued."""
        self._ended = True
        self.direct = False
        self.queue.clear()
        self._settle_flush()

    async def flush(self, timeout_s: float) -> bool:
        """Wait (bounded) until everything queued is written; False on timeout."""
        if not self.queue:
            return True
        self._flushed = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await self._flushed
        except TimeoutError:
            log.warning(
                "agent did not take %d queued caller frames before close", self.queue.audio_frames
            )
            return False
        finally:
            self._flushed = None
        return True

    def _drain(self) -> None:
        """Write what is queued while the transport takes it; then write directly again."""
        queue, transport = self.queue, self._transport
        if transport is not None and self._started and not self._ended:
            while self._writable and (item := queue.pop()) is not None:
                if isinstance(item, bytes):
                    transport.send(_BINARY, item)
                    self.sent += 1
                else:
                    transport.send(_TEXT, item)
        if not queue:
            self.direct = self._writable and self._started and not (self._stopped or self._ended)
            self._settle_flush()

    def _settle_flush(self) -> None:
        if self._flushed is not None and not self._flushed.done():
            self._flushed.set_result(None)
