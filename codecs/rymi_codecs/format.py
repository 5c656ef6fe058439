"""One description of an audio format, used everywhere instead of loose integers.

An :class:`AudioFormat` is an encoding, a sample rate and a channel count; a frame
duration turns it into a byte count per frame. Carriers stream 20 ms frames (Twilio's
media messages, Plivo's, and Vonage, which *requires* exactly 20 ms binary frames:
320 B at 8 kHz L16, 640 B at 16 kHz), so 20 ms is the default everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rymi_codecs.errors import InvalidAudioError, UnsupportedFormatError

__all__ = [
    "ALAW_8K",
    "FRAME_MS",
    "L16_8K",
    "L16_16K",
    "L16_24K",
    "L16_48K",
    "MULAW_8K",
    "SUPPORTED_RATES",
    "AudioFormat",
    "Encoding",
]

FRAME_MS = 20
"""The frame duration carriers use and the gateway paces at, in milliseconds."""

SUPPORTED_RATES = (8000, 16000, 24000, 48000)
"""Sample rates (Hz) the resampler and framer accept."""

_FRAME_DURATIONS_MS = (10, 20, 30)  # the durations webrtcvad accepts; 20 ms is the norm


class Encoding(StrEnum):
    """Sample encodings on the wire."""

    MULAW = "mulaw"
    """G.711 μ-law (ITU-T G.711), one byte per sample, 8 kHz only."""
    ALAW = "alaw"
    """G.711 A-law (ITU-T G.711), one byte per sample, 8 kHz only."""
    L16 = "l16"
    """Linear 16-bit signed PCM, little-endian (what carriers call L16 or PCM16)."""

    @property
    def bytes_per_sample(self) -> int:
        """Bytes one sample takes in this encoding."""
        return 2 if self is Encoding.L16 else 1


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """An audio stream's encoding, rate and channels.

    Raises:
        UnsupportedFormatError: G.711 at a rate other than 8 kHz, a rate outside
            :data:`SUPPORTED_RATES`, or more than one channel (phone audio is mono).
    """

    encoding: Encoding
    """How samples are encoded."""
    sample_rate: int
    """Samples per second, in Hz."""
    channels: int = 1
    """Channel count; only mono is supported."""

    def __post_init__(self) -> None:
        if self.sample_rate not in SUPPORTED_RATES:
            raise UnsupportedFormatError(
                f"sample rate {self.sample_rate} Hz is not supported; "
                f"expected one of {', '.join(map(str, SUPPORTED_RATES))} Hz"
            )
        if self.encoding is not Encoding.L16 and self.sample_rate != 8000:
            raise UnsupportedFormatError(
                f"{self.encoding.value} is defined at 8000 Hz only (ITU-T G.711), "
                f"got {self.sample_rate} Hz"
            )
        if self.channels != 1:
            raise UnsupportedFormatError(f"expected 1 channel (mono), got {self.channels}")

    @property
    def bytes_per_sample(self) -> int:
        """Bytes per sample (all channels)."""
        return self.encoding.bytes_per_sample * self.channels

    @property
    def bytes_per_second(self) -> int:
        """Bytes of audio per second of time."""
        return self.bytes_per_sample * self.sample_rate

    def samples_per_frame(self, frame_ms: int = FRAME_MS) -> int:
        """Samples in one frame of ``frame_ms`` milliseconds."""
        _check_frame_ms(frame_ms)
        return self.sample_rate * frame_ms // 1000

    def bytes_per_frame(self, frame_ms: int = FRAME_MS) -> int:
        """Bytes in one frame of ``frame_ms`` milliseconds (160 for 20 ms of μ-law)."""
        return self.samples_per_frame(frame_ms) * self.bytes_per_sample

    def duration_ms(self, nbytes: int) -> float:
        """Duration in milliseconds of ``nbytes`` bytes of this format."""
        self.check_aligned(nbytes)
        return nbytes * 1000 / self.bytes_per_second

    def check_aligned(self, nbytes: int) -> None:
        """Raise :class:`InvalidAudioError` unless ``nbytes`` is whole samples."""
        if nbytes % self.bytes_per_sample:
            raise InvalidAudioError(
                f"{nbytes} bytes is not a whole number of {self.bytes_per_sample}-byte "
                f"samples of {self}"
            )

    def __str__(self) -> str:
        return f"{self.encoding.value}/{self.sample_rate}"


def _check_frame_ms(frame_ms: int) -> None:
    if frame_ms not in _FRAME_DURATIONS_MS:
        raise UnsupportedFormatError(
            f"frame duration {frame_ms} ms is not supported; expected one of "
            f"{', '.join(map(str, _FRAME_DURATIONS_MS))} ms"
        )


MULAW_8K = AudioFormat(Encoding.MULAW, 8000)
ALAW_8K = AudioFormat(Encoding.ALAW, 8000)
L16_8K = AudioFormat(Encoding.L16, 8000)
L16_16K = AudioFormat(Encoding.L16, 16000)
L16_24K = AudioFormat(Encoding.L16, 24000)
L16_48K = AudioFormat(Encoding.L16, 48000)
