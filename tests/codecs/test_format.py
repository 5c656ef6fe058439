"""AudioFormat: validation and the byte arithmetic every other module relies on."""

from __future__ import annotations

import dataclasses

import pytest

from rymi_codecs import (
    ALAW_8K,
    L16_8K,
    L16_16K,
    L16_48K,
    MULAW_8K,
    AudioFormat,
    Encoding,
    InvalidAudioError,
    UnsupportedFormatError,
)


@pytest.mark.parametrize(
    ("fmt", "frame_bytes"),
    [(MULAW_8K, 160), (ALAW_8K, 160), (L16_8K, 320), (L16_16K, 640), (L16_48K, 1920)],
)
def test_bytes_per_frame(fmt: AudioFormat, frame_bytes: int) -> None:
    assert fmt.bytes_per_frame() == frame_bytes
    assert fmt.bytes_per_frame(10) * 2 == frame_bytes
    assert fmt.duration_ms(frame_bytes) == 20.0


def test_str_and_frozen() -> None:
    assert str(L16_16K) == "l16/16000"
    with pytest.raises(dataclasses.FrozenInstanceError):
        L16_16K.sample_rate = 8000  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((Encoding.MULAW, 16000), r"mulaw is defined at 8000 Hz only \(ITU-T G.711\), got 16000"),
        ((Encoding.L16, 22050), "expected one of 8000, 16000, 24000, 48000 Hz"),
        ((Encoding.L16, 16000, 2), "expected 1 channel"),
    ],
)
def test_unsupported(args: tuple[Encoding, int], match: str) -> None:
    with pytest.raises(UnsupportedFormatError, match=match):
        AudioFormat(*args)


def test_misaligned_duration() -> None:
    with pytest.raises(InvalidAudioError, match="3 bytes is not a whole number of 2-byte samples"):
        L16_8K.duration_ms(3)
