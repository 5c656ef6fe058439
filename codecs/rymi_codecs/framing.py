"""Cut a byte stream into exact frames (20 ms by default) for any :class:`AudioFormat`.

Carriers and agents send chunks of any size; the paced path toward the carrier needs
frames of exactly one duration. Vonage in particular closes the socket on binary frames
that are not exactly 20 ms (640 bytes of L16 at 16 kHz, 320 at 8 kHz), so the last,
short frame of a stream is padded with the encoding's silence rather than sent short.
"""

from __future__ import annotations

from rymi_codecs.format import FRAME_MS, AudioFormat
from rymi_codecs.levels import SILENCE_BYTE
from rymi_codecs.pcm import Buffer, check_buffer

__all__ = ["Framer"]


class Framer:
    """Collects chunks and hands back whole frames, carrying the remainder between calls.

    The stream is treated as bytes: a chunk may even end inside a sample (only the end of
    the stream must be whole samples).

    Args:
        fmt: the stream's format.
        frame_ms: frame duration, ms (10, 20 or 30).

    Raises:
        UnsupportedFormatError: ``frame_ms`` is not 10, 20 or 30.
    """

    def __init__(self, fmt: AudioFormat, frame_ms: int = FRAME_MS) -> None:
        self.format = fmt
        self.frame_bytes = fmt.bytes_per_frame(frame_ms)
        """Size of every frame this framer returns, in bytes."""
        self._buf = bytearray()
        self.held = 0
        """Bytes held back (as :attr:`pending`), kept as a plain attribute for the
        per-frame check "nothing held and the chunk is one frame: it is the frame"."""

    @property
    def pending(self) -> int:
        """Bytes held back, waiting to complete a frame (always < :attr:`frame_bytes`)."""
        return len(self._buf)

    def push(self, chunk: Buffer) -> list[bytes]:
        """Add ``chunk`` and return the frames now complete (possibly none).

        Raises:
            InvalidAudioError: ``chunk`` is not bytes-like.
        """
        size = self.frame_bytes
        # The common case: the sender already sends whole frames (no check needed: bytes).
        if type(chunk) is bytes and len(chunk) == size and not self._buf:
            return [chunk]
        self._buf += check_buffer(chunk)
        whole = len(self._buf) - len(self._buf) % size
        frames = [bytes(self._buf[i : i + size]) for i in range(0, whole, size)]
        del self._buf[:whole]
        self.held = len(self._buf)
        return frames

    def flush(self, pad: bool = True) -> list[bytes]:
        """End the stream: return the partial last frame, if any, and empty the framer.

        Args:
            pad: fill the last frame up to :attr:`frame_bytes` with the encoding's silence
                (what carriers need); ``False`` returns it short.

        Raises:
            InvalidAudioError: the held-back bytes are not whole samples; the framer is
                emptied all the same.
        """
        rest, self._buf = bytes(self._buf), bytearray()
        self.held = 0
        if not rest:
            return []
        self.format.check_aligned(len(rest))
        if pad:
            rest += bytes([SILENCE_BYTE[self.format.encoding]]) * (self.frame_bytes - len(rest))
        return [rest]

    def reset(self) -> None:
        """Drop anything held back (e.g. on a barge-in ``clear``)."""
        self._buf.clear()
        self.held = 0
