"""G.711 against an independent oracle: the segment algorithm written out here, per G.711.

The oracle follows ITU-T G.711's segment (chord) and step encoding as in the reference
implementation distributed with the recommendation's software tools (Sun's g711.c), on
16-bit input: μ-law biases by 33 (132 at 16 bits) and has 8 segments of 16 steps; A-law
has a linear first two segments and inverts the even bits (XOR 0x55).
"""

from __future__ import annotations

import numpy as np
import pytest

from rymi_codecs import (
    Encoding,
    InvalidAudioError,
    UnsupportedFormatError,
    decode,
    decode_alaw,
    decode_mulaw,
    encode,
    encode_alaw,
    encode_mulaw,
)
from rymi_codecs.g711 import decoder, encoder

_ULAW_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
_BIAS = 0x84


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for seg, end in enumerate(ends):
        if value <= end:
            return seg
    return len(ends)


def oracle_ulaw_encode(sample: int) -> int:
    value = sample >> 2  # 14-bit magnitude range
    mask = 0xFF
    if value < 0:
        value, mask = -value, 0x7F
    value = min(value, 8159) + (_BIAS >> 2)
    seg = _segment(value, _ULAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((value >> (seg + 1)) & 0x0F)) ^ mask


def oracle_ulaw_decode(code: int) -> int:
    code = ~code & 0xFF
    t = (((code & 0x0F) << 3) + _BIAS) << ((code & 0x70) >> 4)
    return _BIAS - t if code & 0x80 else t - _BIAS


def oracle_alaw_encode(sample: int) -> int:
    value = sample >> 3  # 13-bit range
    mask = 0xD5
    if value < 0:
        value, mask = -value - 1, 0x55
    seg = _segment(value, _ALAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    step = (value >> 1) if seg < 2 else (value >> seg)
    return ((seg << 4) | (step & 0x0F)) ^ mask


def oracle_alaw_decode(code: int) -> int:
    code ^= 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    t += 8 if seg == 0 else 0x108
    if seg > 1:
        t <<= seg - 1
    return t if code & 0x80 else -t


ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()


def _pcm(values: list[int]) -> bytes:
    return np.array(values, dtype="<i2").tobytes()


def test_mulaw_decode_matches_oracle_on_all_256_codes() -> None:
    assert decode_mulaw(ALL_CODES) == _pcm([oracle_ulaw_decode(c) for c in range(256)])


def test_alaw_decode_matches_oracle_on_all_256_codes() -> None:
    assert decode_alaw(ALL_CODES) == _pcm([oracle_alaw_decode(c) for c in range(256)])


def test_mulaw_encode_matches_oracle_on_every_int16() -> None:
    expected = bytes(oracle_ulaw_encode(s) for s in range(-32768, 32768))
    assert encode_mulaw(ALL_SAMPLES) == expected


def test_alaw_encode_matches_oracle_on_every_int16() -> None:
    expected = bytes(oracle_alaw_encode(s) for s in range(-32768, 32768))
    assert encode_alaw(ALL_SAMPLES) == expected


def test_oracle_known_points() -> None:
    # Fixed points from G.711 itself, so that the oracle is not only checked against audioop.
    assert oracle_ulaw_decode(0xFF) == 0
    assert oracle_ulaw_decode(0x7F) == 0
    assert oracle_ulaw_decode(0x80) == 32124
    assert oracle_ulaw_decode(0x00) == -32124
    assert oracle_alaw_decode(0xD5) == 8
    assert oracle_alaw_decode(0x55) == -8
    assert oracle_alaw_decode(0xAA) == 32256
    assert oracle_alaw_decode(0x2A) == -32256
    assert oracle_ulaw_encode(0) == 0xFF
    assert oracle_alaw_encode(0) == 0xD5


@pytest.mark.parametrize(("enc", "dec"), [(encode_mulaw, decode_mulaw), (encode_alaw, decode_alaw)])
def test_decode_then_encode_is_identity_on_codes(enc: object, dec: object) -> None:
    assert callable(enc)
    assert callable(dec)
    # Every code except μ-law's negative zero (0x7F, which decodes to 0 = code 0xFF).
    codes = bytes(c for c in range(256) if not (enc is encode_mulaw and c == 0x7F))
    assert enc(dec(codes)) == codes


def test_dispatch_by_encoding() -> None:
    pcm = _pcm([0, 1000, -1000, 32767])
    assert encode(pcm, Encoding.MULAW) == encode_mulaw(pcm)
    assert encode(pcm, Encoding.ALAW) == encode_alaw(pcm)
    assert encode(pcm, Encoding.L16) == pcm
    assert decode(ALL_CODES, Encoding.MULAW) == decode_mulaw(ALL_CODES)
    assert decode(ALL_CODES, Encoding.ALAW) == decode_alaw(ALL_CODES)
    assert decode(bytearray(pcm), Encoding.L16) == pcm
    assert decode(memoryview(pcm), Encoding.L16) == pcm


def test_codec_chosen_once_is_the_one_dispatch_uses() -> None:
    pcm = _pcm([0, 1000, -1000, 32767])
    for enc in Encoding:
        assert encoder(enc)(pcm) == encode(pcm, enc)
        assert decoder(enc)(ALL_CODES) == decode(ALL_CODES, enc)
    with pytest.raises(InvalidAudioError, match="even byte count"):
        encoder(Encoding.L16)(b"\x00")
    with pytest.raises(UnsupportedFormatError, match="got 'gsm'"):
        decoder("gsm")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedFormatError, match="got 'opus'"):
        encoder("opus")  # type: ignore[arg-type]


def test_accepts_bytes_like_inputs() -> None:
    pcm = _pcm([5, -5, 300])
    assert encode_mulaw(bytearray(pcm)) == encode_mulaw(pcm)
    assert encode_alaw(memoryview(pcm)) == encode_alaw(pcm)
    words = memoryview(pcm).cast("h")  # items are 2 bytes; still 6 bytes of audio
    assert encode_mulaw(words) == encode_mulaw(pcm)
    assert decode_mulaw(bytearray(b"\xff\x00")) == decode_mulaw(b"\xff\x00")


@pytest.mark.parametrize("func", [encode_mulaw, encode_alaw])
def test_encode_rejects_odd_byte_count(func: object) -> None:
    assert callable(func)
    with pytest.raises(InvalidAudioError, match=r"even byte count\), got 3 bytes"):
        func(b"\x00\x01\x02")


@pytest.mark.parametrize("encoding", [Encoding.L16])
def test_l16_rejects_odd_byte_count(encoding: Encoding) -> None:
    with pytest.raises(InvalidAudioError, match="2 bytes per sample"):
        decode(b"\x00", encoding)
    with pytest.raises(InvalidAudioError, match="2 bytes per sample"):
        encode(b"\x00", encoding)


@pytest.mark.parametrize("func", [decode_mulaw, decode_alaw, encode_mulaw, encode_alaw])
def test_rejects_non_bytes(func: object) -> None:
    assert callable(func)
    with pytest.raises(InvalidAudioError, match=r"expected .* as bytes, bytearray or memoryview"):
        func("not audio")


def test_rejects_non_contiguous_memoryview() -> None:
    with pytest.raises(InvalidAudioError, match="contiguous memoryview"):
        decode_mulaw(memoryview(b"abcdef")[::2])


def test_unknown_encoding() -> None:
    with pytest.raises(UnsupportedFormatError, match=r"expected an Encoding \(mulaw, alaw, l16\)"):
        decode(b"", "gsm")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedFormatError, match="got 'opus'"):
        encode(b"", "opus")  # type: ignore[arg-type]
