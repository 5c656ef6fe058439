"""Silence per encoding (exact bytes) and RMS dBFS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rymi_codecs import (
    ALAW_8K,
    L16_8K,
    L16_16K,
    L16_48K,
    MULAW_8K,
    SILENCE_BYTE,
    AudioFormat,
    InvalidAudioError,
    InvalidSettingError,
    UnsupportedFormatError,
    decode,
    encode,
    rms_dbfs,
    silence,
    silence_samples,
)


def test_silence_bytes_are_exact() -> None:
    assert silence(MULAW_8K) == b"\xff" * 160
    assert silence(ALAW_8K) == b"\xd5" * 160
    assert silence(L16_8K) == b"\x00" * 320
    assert silence(L16_16K) == b"\x00" * 640
    assert silence(L16_48K, 10) == b"\x00" * 960
    assert silence_samples(MULAW_8K, 3) == b"\xff\xff\xff"
    assert silence_samples(ALAW_8K, 0) == b""


@pytest.mark.parametrize("fmt", [MULAW_8K, ALAW_8K])
def test_g711_silence_decodes_to_the_smallest_level(fmt: AudioFormat) -> None:
    pcm = np.frombuffer(decode(silence(fmt), fmt.encoding), dtype="<i2")
    assert np.abs(pcm).max() <= 8  # μ-law 0xFF is 0, A-law 0xD5 is +8 (no zero code)
    assert encode(b"\x00\x00", fmt.encoding) == bytes([SILENCE_BYTE[fmt.encoding]])


def test_rms_dbfs_of_known_signals() -> None:
    square = np.tile([32767, -32768], 80).astype("<i2").tobytes()
    assert rms_dbfs(square, L16_8K) == pytest.approx(0.0, abs=0.001)
    t = np.arange(1600) / 8000
    sine = np.rint(32767 * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tobytes()
    assert rms_dbfs(sine, L16_8K) == pytest.approx(-3.01, abs=0.01)
    half = np.rint(16384 * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tobytes()
    assert rms_dbfs(half, L16_8K) == pytest.approx(-9.03, abs=0.01)


def test_rms_dbfs_of_g711_frames() -> None:
    assert rms_dbfs(silence(MULAW_8K), MULAW_8K) == -math.inf
    assert rms_dbfs(silence(L16_16K), L16_16K) == -math.inf
    assert rms_dbfs(silence(ALAW_8K), ALAW_8K) == pytest.approx(20 * math.log10(8 / 32768))
    loud = encode(np.tile([20000, -20000], 80).astype("<i2").tobytes(), MULAW_8K.encoding)
    level = 20 * math.log10(
        float(np.abs(np.frombuffer(decode(loud, MULAW_8K.encoding), "<i2")).mean()) / 32768
    )
    assert rms_dbfs(loud, MULAW_8K) == pytest.approx(level)


def test_errors() -> None:
    with pytest.raises(InvalidAudioError, match="got an empty frame"):
        rms_dbfs(b"", MULAW_8K)
    with pytest.raises(InvalidAudioError, match="even byte count"):
        rms_dbfs(b"\x00", L16_8K)
    with pytest.raises(InvalidSettingError, match="sample count >= 0, got -1"):
        silence_samples(L16_8K, -1)
    with pytest.raises(UnsupportedFormatError, match="frame duration 15 ms"):
        silence(L16_8K, 15)
