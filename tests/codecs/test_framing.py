"""Framer: exact frames for any chunking (hypothesis), remainders, silence padding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rymi_codecs import (
    ALAW_8K,
    L16_8K,
    L16_16K,
    L16_24K,
    L16_48K,
    MULAW_8K,
    SILENCE_BYTE,
    AudioFormat,
    Framer,
    InvalidAudioError,
    UnsupportedFormatError,
)

FORMATS = [MULAW_8K, ALAW_8K, L16_8K, L16_16K, L16_24K, L16_48K]


@st.composite
def stream_and_cuts(draw: st.DrawFn) -> tuple[AudioFormat, int, bytes, list[int]]:
    fmt = draw(st.sampled_from(FORMATS))
    frame_ms = draw(st.sampled_from([10, 20, 30]))
    samples = draw(st.integers(0, 3 * fmt.samples_per_frame(frame_ms) + 5))
    data = draw(
        st.binary(min_size=samples * fmt.bytes_per_sample, max_size=samples * fmt.bytes_per_sample)
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    return fmt, frame_ms, data, cuts


@settings(max_examples=300, deadline=None)
@given(case=stream_and_cuts(), pad=st.booleans())
def test_frames_concatenate_to_input_for_any_chunking(
    case: tuple[AudioFormat, int, bytes, list[int]], pad: bool
) -> None:
    fmt, frame_ms, data, cuts = case
    framer = Framer(fmt, frame_ms)
    frames: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        frames += framer.push(data[start:end])
        assert framer.pending < framer.frame_bytes
    tail = framer.flush(pad=pad)
    size = fmt.bytes_per_frame(frame_ms)
    assert all(len(f) == size for f in frames)
    joined = b"".join(frames + tail)
    assert joined[: len(data)] == data
    if pad:
        assert all(len(f) == size for f in tail)
        assert len(joined) == -(-len(data) // size) * size
        assert set(joined[len(data) :]) <= {SILENCE_BYTE[fmt.encoding]}
    else:
        assert joined == data
    assert framer.pending == 0


@pytest.mark.parametrize(
    ("fmt", "byte"), [(MULAW_8K, 0xFF), (ALAW_8K, 0xD5), (L16_8K, 0x00), (L16_16K, 0x00)]
)
def test_flush_pads_with_the_encodings_silence(fmt: AudioFormat, byte: int) -> None:
    framer = Framer(fmt)
    sample = b"\x11" * fmt.bytes_per_sample
    assert framer.push(sample * 3) == []
    [last] = framer.flush()
    assert last == sample * 3 + bytes([byte]) * (fmt.bytes_per_frame() - 3 * len(sample))


def test_whole_frames_pass_straight_through() -> None:
    framer = Framer(MULAW_8K)
    frame = bytes(range(160))
    assert framer.push(frame) == [frame]
    assert framer.push(bytearray(frame * 2 + b"\x01")) == [frame, frame]
    assert framer.pending == 1
    assert framer.push(memoryview(frame[1:])) == [b"\x01" + frame[1:]]


def test_flush_when_empty_and_reset() -> None:
    framer = Framer(L16_16K)
    assert framer.flush() == []
    framer.push(b"\x00" * 100)
    framer.reset()
    assert framer.pending == 0
    assert framer.flush() == []


def test_flush_rejects_half_a_sample_and_empties() -> None:
    framer = Framer(L16_8K)
    framer.push(b"\x00\x01\x02")
    with pytest.raises(InvalidAudioError, match="whole number of 2-byte samples"):
        framer.flush()
    assert framer.pending == 0


def test_rejects_non_bytes_and_bad_duration() -> None:
    with pytest.raises(InvalidAudioError, match="expected audio as bytes"):
        Framer(MULAW_8K).push([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(UnsupportedFormatError, match="expected one of 10, 20, 30 ms"):
        Framer(MULAW_8K, 25)
