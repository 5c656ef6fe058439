"""The carrier's playback buffer, for the carrier-role simulators.

Every carrier buffers the audio we send and plays it in order in real time, with our
markers (Twilio ``mark``, Plivo ``checkpoint``, Vonage ``notify``) queued between the
audio; a marker is acknowledged when the audio before it has played, at once if
nothing is buffered. What happens to markers on a clear is carrier specific, so
:meth:`Playback.clear` returns them and the simulator decides.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

__all__ = ["Playback"]

M = TypeVar("M")


class Playback(Generic[M]):
    """Queued audio bytes and markers of type ``M``, played ``bytes_per_ms`` at a time.

    Args:
        bytes_per_ms: wire bytes per millisecond of audio (8 for μ-law 8 kHz).
    """

    def __init__(self, bytes_per_ms: int) -> None:
        self.bytes_per_ms = bytes_per_ms
        self._queue: deque[bytes | tuple[M]] = deque()
        self._played = bytearray()
        self.buffered_bytes = 0

    def add_audio(self, payload: bytes) -> None:
        """Queue audio behind everything already queued."""
        if payload:
            self._queue.append(payload)
            self.buffered_bytes += len(payload)

    def add_marker(self, marker: M) -> list[M]:
        """Queue a marker; returns it at once (as reached) if nothing is buffered."""
        if not self._queue:
            return [marker]
        self._queue.append((marker,))
        return []

    def advance(self, ms: int) -> list[M]:
        """Play ``ms`` milliseconds; returns the markers reached, in order."""
        budget = ms * self.bytes_per_ms
        reached: list[M] = []
        while self._queue:
            head = self._queue[0]
            if isinstance(head, tuple):
                reached.append(head[0])
                self._queue.popleft()
                continue
            if budget <= 0:
                break
            take = head[:budget]
            self._played += take
            budget -= len(take)
            self.buffered_bytes -= len(take)
            if len(take) == len(head):
                self._queue.popleft()
            else:
                self._queue[0] = head[len(take) :]
        return reached

    def clear(self) -> list[M]:
        """Drop all queued audio; returns the markers that were pending, in order."""
        pending = [item[0] for item in self._queue if isinstance(item, tuple)]
        self._queue.clear()
        self.buffered_bytes = 0
        return pending

    def take_played(self) -> bytes:
        """Audio played since the last call."""
        played = bytes(self._played)
        self._played.clear()
        return played
