"""The caller's speech and the carriers' wire formats (rymi_codecs), sans I/O.

Every call plays the committed speech fixture (``loadtest/data/two_phrases_16k.wav``,
PCM16 16 kHz mono; package data, so it ships in the wheel) converted once per carrier:
μ-law 8 kHz 160-byte frames for Twilio and Plivo, L16 16 kHz 640-byte frames for Vonage
(docs/carriers.md). Calls longer than the fixture loop it.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rymi_codecs import L16_16K, MULAW_8K, AudioFormat, Resampler, decode, encode

__all__ = [
    "CARRIER_FORMATS",
    "FIXTURE",
    "CarrierAudio",
    "carrier_audio",
    "load_fixture",
    "load_wav",
    "to_pcm8k",
]

FIXTURE = Path(__file__).resolve().parent / "data" / "two_phrases_16k.wav"
"""The committed speech fixture (PCM16 LE, 16 kHz, mono), package data of ``loadtest``.

The one copy in the repository: the tests and scripts/make_speech_fixture.sh use it too.
"""

CARRIER_FORMATS: dict[str, AudioFormat] = {"twilio": MULAW_8K, "plivo": MULAW_8K, "vonage": L16_16K}
"""What each carrier streams (docs/carriers.md)."""

Pcm = np.ndarray[Any, np.dtype[np.float64]]


def load_fixture(path: Path = FIXTURE) -> bytes:
    """PCM16 16 kHz mono samples of a WAV file.

    Raises:
        ValueError: the file is not 16-bit 16 kHz mono PCM.
    """
    pcm, rate = load_wav(path)
    if rate != 16000:
        raise ValueError(f"{path.name}: expected 16-bit 16 kHz mono PCM")
    return pcm


def load_wav(path: Path) -> tuple[bytes, int]:
    """A mono PCM16 WAV file's samples and rate.

    Raises:
        ValueError: not mono 16-bit PCM.
    """
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected mono 16-bit PCM")
        return bytes(w.readframes(w.getnframes())), w.getframerate()


@dataclass(frozen=True, slots=True)
class CarrierAudio:
    """The speech as one carrier's 20 ms frames."""

    carrier: str
    format: AudioFormat
    frames: tuple[bytes, ...]

    @property
    def frame_samples(self) -> int:
        """Samples per frame at the carrier's rate."""
        return self.format.sample_rate // 50

    def frame(self, index: int) -> bytes:
        """Frame ``index`` of the looped speech."""
        return self.frames[index % len(self.frames)]


def carrier_audio(carrier: str, pcm16k: bytes) -> CarrierAudio:
    """Convert PCM16 16 kHz speech to ``carrier``'s wire frames.

    Raises:
        ValueError: an unknown carrier, or less than one frame of speech.
    """
    try:
        fmt = CARRIER_FORMATS[carrier]
    except KeyError:
        raise ValueError(
            f"expected a carrier in {sorted(CARRIER_FORMATS)}, got {carrier!r}"
        ) from None
    if fmt == L16_16K:
        wire = pcm16k
    else:
        resampler = Resampler(16000, fmt.sample_rate)
        wire = encode(resampler.process(pcm16k) + resampler.flush(), fmt.encoding)
    size = fmt.bytes_per_frame()
    frames = tuple(wire[i : i + size] for i in range(0, len(wire) // size * size, size))
    if not frames:
        raise ValueError("expected at least 20 ms of speech")
    return CarrierAudio(carrier, fmt, frames)


def to_pcm8k(wire: bytes, fmt: AudioFormat) -> Pcm:
    """Carrier-format audio as float PCM at 8 kHz (the common rate of the content check)."""
    if fmt == L16_16K:
        pcm = Resampler(16000, 8000).process(wire)
    elif fmt.sample_rate == 8000:
        pcm = decode(wire, fmt.encoding)
    else:
        raise ValueError(f"expected a carrier format, got {fmt}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)
