"""Level metering (RMS in dBFS) and silence in each encoding.

Silence is the encoding's idle pattern, not just "zero bytes": G.711 has no all-zero
code for zero. μ-law 0xFF decodes to 0 (ITU-T G.711 Table 2a, code 0x7F with all bits
inverted); A-law 0xD5 decodes to +8, the smallest positive step, and is the idle pattern
of A-law links (G.711 Table 1a, even bits inverted). L16 silence is zeros.
"""

from __future__ import annotations

import math

import numpy as np

from rymi_codecs.errors import InvalidAudioError, InvalidSettingError
from rymi_codecs.format import FRAME_MS, AudioFormat, Encoding
from rymi_codecs.g711 import decode
from rymi_codecs.pcm import Buffer, pcm16_samples

__all__ = ["SILENCE_BYTE", "rms_dbfs", "silence", "silence_samples"]

SILENCE_BYTE = {Encoding.MULAW: 0xFF, Encoding.ALAW: 0xD5, Encoding.L16: 0x00}
"""The byte that, repeated, is silence in each encoding."""

_FULL_SCALE = 32768.0


def silence_samples(fmt: AudioFormat, samples: int) -> bytes:
    """Return ``samples`` samples of silence in ``fmt``.

    Raises:
        InvalidSettingError: ``samples`` is negative.
    """
    if samples < 0:
        raise InvalidSettingError(f"expected a sample count >= 0, got {samples}")
    return bytes([SILENCE_BYTE[fmt.encoding]]) * (samples * fmt.bytes_per_sample)


def silence(fmt: AudioFormat, frame_ms: int = FRAME_MS) -> bytes:
    """Return one frame of ``frame_ms`` milliseconds of silence in ``fmt``.

    Raises:
        UnsupportedFormatError: ``frame_ms`` is not 10, 20 or 30.
    """
    return silence_samples(fmt, fmt.samples_per_frame(frame_ms))


def rms_dbfs(frame: Buffer, fmt: AudioFormat) -> float:
    """RMS level of ``frame`` in dB relative to full scale (32768).

    A full-scale square wave is 0 dBFS and a full-scale sine about -3.01 dBFS (plain RMS,
    not the AES17 convention that adds 3.01 dB). Digital silence is ``-inf``.

    Raises:
        InvalidAudioError: ``frame`` is empty, not bytes-like or not whole samples of ``fmt``.
    """
    pcm = decode(frame, fmt.encoding)
    if not pcm:
        raise InvalidAudioError(f"expected at least one sample of {fmt}, got an empty frame")
    x = pcm16_samples(pcm).astype(np.float64)
    power = float(np.dot(x, x)) / len(x)
    if power == 0.0:
        return -math.inf
    return 10.0 * math.log10(power / (_FULL_SCALE * _FULL_SCALE))
