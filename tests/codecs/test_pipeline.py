"""The per-call chains, checked against the same steps done by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rymi_codecs import (
    ALAW_8K,
    L16_8K,
    L16_16K,
    L16_24K,
    MULAW_8K,
    AgentToCaller,
    AudioFormat,
    CallerToAgent,
    InvalidAudioError,
    Resampler,
    SpeechEnded,
    SpeechStarted,
    UnsupportedFormatError,
    VoiceActivityDetector,
    decode,
    encode,
)
from tests.codecs.test_vad import speech_fixture


def caller_audio(fmt: AudioFormat) -> bytes:
    """The speech fixture as a carrier would send it in ``fmt``."""
    r = Resampler(16000, fmt.sample_rate)
    return encode(r.process(speech_fixture()) + r.flush(), fmt.encoding)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize(
    ("carrier", "agent_rate"),
    [(MULAW_8K, 16000), (ALAW_8K, 24000), (L16_16K, 16000), (L16_8K, 16000)],
)
def test_caller_to_agent_equals_manual_chain(carrier: AudioFormat, agent_rate: int) -> None:
    payloads = chunks(caller_audio(carrier)[: carrier.bytes_per_second], carrier.bytes_per_frame())
    chain = CallerToAgent(carrier, agent_rate)
    got = b"".join(chain.process(p) for p in payloads) + chain.flush()
    r = Resampler(carrier.sample_rate, agent_rate)
    expected = r.process(decode(b"".join(payloads), carrier.encoding)) + r.flush()
    assert got == expected
    assert chain.events_received() == []


@pytest.mark.parametrize(
    ("carrier", "vad_rate"), [(MULAW_8K, 16000), (MULAW_8K, 8000), (L16_16K, 16000)]
)
def test_caller_to_agent_reports_speech(carrier: AudioFormat, vad_rate: int) -> None:
    chain = CallerToAgent(carrier, 16000, VoiceActivityDetector(vad_rate))
    events = []
    for payload in chunks(caller_audio(carrier), carrier.bytes_per_frame()):
        chain.process(payload)
        events += chain.events_received()
    chain.flush()
    events += chain.events_received()
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded] * 2
    gap = events[2].start_ms - events[1].end_ms  # type: ignore[union-attr]
    assert gap >= 900


def test_vad_events_do_not_depend_on_how_the_audio_is_cut() -> None:
    # Whole 20 ms payloads skip the VAD's framer; these chunkings mix them with odd sizes,
    # so whole payloads also arrive while the framer holds a remainder. No hangover: every
    # frame's decision shows, so frames taken out of order would too.
    audio = caller_audio(MULAW_8K)

    def events(sizes: list[int]) -> list[object]:
        vad = VoiceActivityDetector(8000, start_frames=1, end_frames=1)
        chain = CallerToAgent(MULAW_8K, 16000, vad)
        pcm, pos = b"", 0
        for size in itertools.cycle(sizes):
            if pos >= len(audio):
                break
            pcm += chain.process(audio[pos : pos + size])
            pos += size
        pcm += chain.flush()
        return [pcm, *chain.events_received()]

    expected = events([160])
    assert len(expected) > 5  # the PCM, then (at least) two phrases' start and end
    assert events([160, 100, 160, 60, 160, 160, 480]) == expected
    assert events([100, 160]) == expected
    assert events([37]) == expected


def test_flush_closes_speech_that_is_still_open() -> None:
    audio = caller_audio(MULAW_8K)[: 8000 * 2]  # cut during the first phrase
    chain = CallerToAgent(MULAW_8K, 16000, VoiceActivityDetector(16000))
    for payload in chunks(audio, 160):
        chain.process(payload)
    assert [type(e) for e in chain.events_received()] == [SpeechStarted]
    chain.flush()
    [ended] = chain.events_received()
    assert isinstance(ended, SpeechEnded)


def test_vad_rate_must_be_on_the_chain() -> None:
    with pytest.raises(UnsupportedFormatError, match="expected 8000 or 24000 Hz"):
        CallerToAgent(MULAW_8K, 24000, VoiceActivityDetector(16000))


@pytest.mark.parametrize("carrier", [MULAW_8K, ALAW_8K, L16_8K, L16_16K])
@pytest.mark.parametrize("agent_rate", [16000, 24000])
def test_agent_to_caller_frames(carrier: AudioFormat, agent_rate: int) -> None:
    rng = np.random.default_rng(1)
    pcm = rng.integers(-8000, 8000, agent_rate * 3 // 10 + 37).astype("<i2").tobytes()
    chain = AgentToCaller(agent_rate, carrier)
    frames = [f for c in chunks(pcm, 1234) for f in chain.process(c)] + chain.flush()
    assert {len(f) for f in frames} == {carrier.bytes_per_frame()}
    r = Resampler(agent_rate, carrier.sample_rate)
    expected = encode(r.process(pcm) + r.flush(), carrier.encoding)
    joined = b"".join(frames)
    assert joined[: len(expected)] == expected
    assert len(joined) - len(expected) < carrier.bytes_per_frame()


def test_agent_to_caller_frames_do_not_depend_on_chunking() -> None:
    # 640-byte chunks are exactly one carrier frame after resampling: they skip the framer
    # unless it holds a remainder from an odd chunk before them.
    rng = np.random.default_rng(2)
    pcm = rng.integers(-8000, 8000, 16000).astype("<i2").tobytes()

    def frames(sizes: list[int]) -> list[bytes]:
        chain, out, pos = AgentToCaller(16000, MULAW_8K), [], 0
        for size in itertools.cycle(sizes):
            if pos >= len(pcm):
                break
            out += chain.process(pcm[pos : pos + size])
            pos += size
        return out + chain.flush()

    expected = frames([640])
    assert {len(f) for f in expected} == {160}
    assert frames([640, 640, 100, 640, 540, 1280]) == expected
    assert frames([6]) == expected


def test_agent_to_caller_unpadded_flush_and_clear() -> None:
    chain = AgentToCaller(16000, MULAW_8K)
    assert chain.process(bytes(100)) == []
    [short] = chain.flush(pad=False)
    assert len(short) < 160
    chain.process(bytes(600))
    chain.clear()
    assert chain.flush() == []


def test_bad_input_is_typed() -> None:
    with pytest.raises(InvalidAudioError, match="even byte count"):
        AgentToCaller(16000, MULAW_8K).process(b"\x00")
    with pytest.raises(InvalidAudioError, match="even byte count"):
        CallerToAgent(L16_16K, 16000).process(b"\x00")
    with pytest.raises(UnsupportedFormatError, match="sample rate 44100 Hz"):
        CallerToAgent(MULAW_8K, 44100)
    assert CallerToAgent(L16_24K, 24000).process(b"\x01\x00") == b"\x01\x00"
