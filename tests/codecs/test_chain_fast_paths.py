"""The chains' fast paths for ``bytes`` give what the general path gives for other buffers.

``CallerToAgent.process`` and ``AgentToCaller.process`` call audioop, the resampler's
kernel and webrtcvad's C function directly when handed ``bytes``; a ``bytearray`` or a
``memoryview`` of the same audio takes the general, checked path. Here both run on the
same real speech, cut the same way, and must agree byte for byte and event for event.
The pieces the fast paths use (``Framer.held``, ``sample_codec``,
``Resampler.bytes_kernel``, the VAD's direct call) are checked on their own too.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
import webrtcvad
from hypothesis import given, settings
from hypothesis import strategies as st

from rymi_codecs import (
    ALAW_8K,
    L16_8K,
    L16_16K,
    L16_24K,
    MULAW_8K,
    SUPPORTED_RATES,
    AgentToCaller,
    AudioFormat,
    CallerToAgent,
    Encoding,
    Framer,
    InvalidAudioError,
    Resampler,
    UnsupportedFormatError,
    VadEvent,
    VoiceActivityDetector,
    decode,
    encode,
)
from rymi_codecs.g711 import sample_codec
from rymi_codecs.pcm import Buffer
from tests.codecs.test_vad import speech_fixture

CARRIERS = [MULAW_8K, ALAW_8K, L16_8K, L16_16K]
AGENT_RATES = [8000, 16000]
Wrap = Callable[[bytes], Buffer]
SLOW_WRAPS: dict[str, Wrap] = {"bytearray": bytearray, "memoryview": memoryview}


@cache
def speech_at(rate: int) -> bytes:
    """The speech fixture (16 kHz) as PCM16 at ``rate``."""
    if rate == 16000:
        return speech_fixture()
    r = Resampler(16000, rate)
    return r.process(speech_fixture()) + r.flush()


@cache
def caller_audio(fmt: AudioFormat) -> bytes:
    """The speech fixture as a carrier sends it in ``fmt``."""
    return encode(speech_at(fmt.sample_rate), fmt.encoding)


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in chunks of ``sizes`` bytes, cycled (the last chunk may be shorter)."""
    chunks: list[bytes] = []
    pos = 0
    for size in itertools.cycle(sizes):
        if pos >= len(data):
            return chunks
        chunks.append(data[pos : pos + size])
        pos += size
    raise AssertionError("unreachable")


def chunkings(fmt: AudioFormat) -> dict[str, list[int]]:
    """20 ms frames, and irregular whole-sample sizes (empty and one-frame chunks mixed in,
    so whole frames also arrive while a framer holds a remainder)."""
    frame, width = fmt.bytes_per_frame(), fmt.bytes_per_sample
    odd = [37 * width, frame, 101 * width, 0, frame, frame, 3 * width, 2 * frame + width]
    return {"20ms": [frame], "odd": odd}


# -- caller -> agent --------------------------------------------------------------------


def vad_rates(carrier: AudioFormat, agent_rate: int) -> list[int | None]:
    return [None, *sorted({carrier.sample_rate, agent_rate})]


CALLER_CASES = [
    pytest.param(
        carrier, agent_rate, vad_rate, sizes, id=f"{carrier}-{agent_rate}-{vad_rate}-{sizes}"
    )
    for carrier in CARRIERS
    for agent_rate in AGENT_RATES
    for vad_rate in vad_rates(carrier, agent_rate)
    for sizes in ("20ms", "odd")
]


class SeeingVAD(VoiceActivityDetector):
    """A real detector that also keeps the frames it was given, in order.

    WebRTC's decisions hardly change when frames are reordered or cut elsewhere, so the
    events alone would miss a fast path that skips a framer holding a remainder.
    """

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate, start_frames=1, end_frames=1)
        self.seen: list[bytes] = []

    def process(self, frame: Buffer) -> VadEvent | None:
        self.seen.append(bytes(frame))
        return super().process(frame)


def run_caller(
    carrier: AudioFormat, agent_rate: int, vad_rate: int | None, chunks: list[bytes], wrap: Wrap
) -> dict[str, Any]:
    """Per chunk: the PCM out, the events then found and the frames the VAD had seen by
    then; then flush's PCM and events, and every frame the VAD saw."""
    vad = None if vad_rate is None else SeeingVAD(vad_rate)
    chain = CallerToAgent(carrier, agent_rate, vad)
    run: dict[str, Any] = {"pcm": [], "events": [], "seen_by_then": []}
    for chunk in chunks:
        pcm = chain.process(wrap(chunk))
        assert type(pcm) is bytes
        run["pcm"].append(pcm)
        pending = list(chain.events)  # what the call reads to skip events_received()
        assert chain.events_received() == pending
        assert chain.events == []
        run["events"].append(pending)
        run["seen_by_then"].append(None if vad is None else len(vad.seen))
    run["flush"] = chain.flush()
    run["flush_events"] = chain.events_received()
    run["seen"] = None if vad is None else vad.seen
    return run


@pytest.mark.parametrize(("carrier", "agent_rate", "vad_rate", "sizes"), CALLER_CASES)
def test_caller_to_agent_bytes_equal_other_buffers(
    carrier: AudioFormat, agent_rate: int, vad_rate: int | None, sizes: str
) -> None:
    chunks = cut(caller_audio(carrier), chunkings(carrier)[sizes])
    fast = run_caller(carrier, agent_rate, vad_rate, chunks, bytes)
    for name, wrap in SLOW_WRAPS.items():
        assert run_caller(carrier, agent_rate, vad_rate, chunks, wrap) == fast, name
    if vad_rate is not None:
        assert sum(len(e) for e in fast["events"]) >= 4  # speech found: the VAD really ran
        # What it ran on: the PCM at its rate, cut into its frames in order (a whole frame
        # passing a framer that holds a remainder would show here, on every buffer type).
        heard = b"".join([*fast["pcm"], fast["flush"]])
        if vad_rate == carrier.sample_rate:
            heard = decode(b"".join(chunks), carrier.encoding)
        frame = vad_rate // 25
        assert fast["seen"] == cut(heard, [frame])[: len(heard) // frame]


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("agent_rate", AGENT_RATES)
def test_caller_to_agent_bytes_equal_the_steps_done_by_hand(
    carrier: AudioFormat, agent_rate: int
) -> None:
    audio = caller_audio(carrier)[: carrier.bytes_per_second]
    chain = CallerToAgent(carrier, agent_rate)
    got = b"".join(chain.process(c) for c in cut(audio, [carrier.bytes_per_frame()]))
    r = Resampler(carrier.sample_rate, agent_rate)
    assert got + chain.flush() == r.process(decode(audio, carrier.encoding)) + r.flush()


@pytest.mark.parametrize("carrier", [L16_8K, L16_16K])
@pytest.mark.parametrize("agent_rate", AGENT_RATES)
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("size", [1, 3, 319, 641])
def test_caller_to_agent_refuses_part_samples_of_l16(
    carrier: AudioFormat, agent_rate: int, wrap: Wrap, size: int
) -> None:
    frame = speech_at(carrier.sample_rate)[16000 : 16000 + carrier.bytes_per_frame()]
    chain = CallerToAgent(carrier, agent_rate, VoiceActivityDetector(carrier.sample_rate))
    twin = CallerToAgent(carrier, agent_rate, VoiceActivityDetector(carrier.sample_rate))
    assert chain.process(frame) == twin.process(frame)
    with pytest.raises(InvalidAudioError):
        chain.process(wrap(bytes(size)))
    # The refused chunk left nothing behind.
    assert chain.process(frame) == twin.process(frame)
    assert chain.flush() == twin.flush()


# -- agent -> caller ----------------------------------------------------------------------

AGENT_CASES = [
    pytest.param(agent_rate, carrier, sizes, id=f"{agent_rate}-{carrier}-{sizes}")
    for agent_rate in AGENT_RATES
    for carrier in CARRIERS
    for sizes in ("20ms", "odd")
]


def run_agent(agent_rate: int, carrier: AudioFormat, chunks: list[bytes], wrap: Wrap) -> list[Any]:
    """Per chunk: the frames out; a barge-in clear half way; then flush, padded."""
    chain = AgentToCaller(agent_rate, carrier)
    out: list[Any] = []
    for i, chunk in enumerate(chunks):
        if i == len(chunks) // 2:
            chain.clear()
            out.append("clear")
        frames = chain.process(wrap(chunk))
        assert all(type(f) is bytes for f in frames)
        out.append(frames)
    return [*out, chain.flush()]


@pytest.mark.parametrize(("agent_rate", "carrier", "sizes"), AGENT_CASES)
def test_agent_to_caller_bytes_equal_other_buffers(
    agent_rate: int, carrier: AudioFormat, sizes: str
) -> None:
    agent = AudioFormat(Encoding.L16, agent_rate)
    chunks = cut(speech_at(agent_rate), chunkings(agent)[sizes])
    fast = run_agent(agent_rate, carrier, chunks, bytes)
    frames = [f for item in fast if isinstance(item, list) for f in item]
    assert {len(f) for f in frames} == {carrier.bytes_per_frame()}
    for name, wrap in SLOW_WRAPS.items():
        assert run_agent(agent_rate, carrier, chunks, wrap) == fast, name


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("agent_rate", AGENT_RATES)
def test_agent_to_caller_bytes_equal_the_steps_done_by_hand(
    agent_rate: int, carrier: AudioFormat
) -> None:
    pcm = speech_at(agent_rate)[: 2 * agent_rate]  # one second
    chain = AgentToCaller(agent_rate, carrier)
    frame = AudioFormat(Encoding.L16, agent_rate).bytes_per_frame()
    got = [f for c in cut(pcm, [frame]) for f in chain.process(c)] + chain.flush(pad=False)
    r = Resampler(agent_rate, carrier.sample_rate)
    assert b"".join(got) == encode(r.process(pcm) + r.flush(), carrier.encoding)


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("agent_rate", AGENT_RATES)
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("size", [1, 3, 641])
def test_agent_to_caller_refuses_part_samples(
    agent_rate: int, carrier: AudioFormat, wrap: Wrap, size: int
) -> None:
    frame = speech_at(agent_rate)[16000 : 16000 + agent_rate // 25]
    chain, twin = AgentToCaller(agent_rate, carrier), AgentToCaller(agent_rate, carrier)
    assert chain.process(frame) == twin.process(frame)
    with pytest.raises(InvalidAudioError):
        chain.process(wrap(bytes(size)))
    assert chain.process(frame) == twin.process(frame)
    assert chain.flush() == twin.flush()


# -- the pieces ---------------------------------------------------------------------------

FORMATS = [MULAW_8K, ALAW_8K, L16_8K, L16_16K, L16_24K]
PATTERN = bytes(range(256)) * 8
WRAPS: dict[str, Wrap] = {"bytes": bytes, **SLOW_WRAPS}


def framer_op() -> st.SearchStrategy[tuple[str, Any]]:
    sizes = st.integers(0, len(PATTERN))
    return st.one_of(
        st.tuples(st.just("bytes"), sizes),
        st.tuples(st.just("bytearray"), sizes),
        st.tuples(st.just("memoryview"), sizes),
        st.tuples(st.just("not a buffer"), st.sampled_from([None, 5, "text"])),
        st.tuples(st.just("flush"), st.booleans()),
        st.tuples(st.just("reset"), st.none()),
    )


def apply(framer: Framer, op: str, arg: Any) -> None:
    if op == "flush":
        framer.flush(pad=arg)
    elif op == "reset":
        framer.reset()
    elif op == "not a buffer":
        framer.push(arg)
    else:
        framer.push(WRAPS[op](PATTERN[:arg]))


@settings(max_examples=200, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    frame_ms=st.sampled_from([10, 20, 30]),
    ops=st.lists(framer_op(), max_size=25),
)
def test_framer_held_is_always_pending(
    fmt: AudioFormat, frame_ms: int, ops: list[tuple[str, Any]]
) -> None:
    framer = Framer(fmt, frame_ms)
    assert framer.held == framer.pending == 0
    for op, arg in ops:
        # A refused chunk, or a flush of part samples: the count must hold all the same.
        with contextlib.suppress(InvalidAudioError):
            apply(framer, op, arg)
        assert framer.held == framer.pending < framer.frame_bytes


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("aggressiveness", [0, 3])
def test_vad_events_do_not_depend_on_the_buffer_type(rate: int, aggressiveness: int) -> None:
    def events(wrap: Wrap) -> list[Any]:
        vad = VoiceActivityDetector(
            rate, aggressiveness=aggressiveness, start_frames=1, end_frames=2
        )
        found = [vad.process(wrap(f)) for f in cut(speech_at(rate), [vad.frame_bytes])[:-1]]
        return [*found, vad.finish()]

    fast = events(bytes)
    assert sum(e is not None for e in fast) >= 4
    assert events(bytearray) == fast
    assert events(memoryview) == fast


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_vad_decisions_are_webrtcvads(rate: int, aggressiveness: int) -> None:
    # WebRTC's VAD adapts to the stream: one fresh detector per pass.
    reference = webrtcvad.Vad(aggressiveness)
    frames = cut(speech_at(rate), [rate // 25])[:-1]
    expected = [reference.is_speech(f, rate) for f in frames]
    assert any(expected)
    assert not all(expected)
    for wrap in (bytes, bytearray, memoryview):
        vad = VoiceActivityDetector(rate, aggressiveness=aggressiveness)
        assert [vad.is_speech(wrap(f)) for f in frames] == expected, wrap.__name__


@pytest.mark.parametrize("encoding", [Encoding.MULAW, Encoding.ALAW])
def test_sample_codec_is_the_codec(encoding: Encoding) -> None:
    to_pcm = sample_codec(encoding, encode=False)
    from_pcm = sample_codec(encoding, encode=True)
    assert to_pcm is not None
    assert from_pcm is not None
    coded, pcm = bytes(range(256)) + bytes(7), speech_at(8000)[:4000]
    assert to_pcm(coded, 2) == decode(coded, encoding)
    assert from_pcm(pcm, 2) == encode(pcm, encoding)


@pytest.mark.parametrize("encode_", [False, True])
def test_sample_codec_is_none_for_l16(encode_: bool) -> None:
    assert sample_codec(Encoding.L16, encode=encode_) is None


@pytest.mark.parametrize("encoding", ["mulaw", "l16", None, 0, AudioFormat])
@pytest.mark.parametrize("encode_", [False, True])
def test_sample_codec_refuses_what_is_not_an_encoding(encoding: Any, encode_: bool) -> None:
    with pytest.raises(UnsupportedFormatError, match="expected an Encoding"):
        sample_codec(encoding, encode=encode_)


KERNELS = [pytest.param(False, id="numpy"), pytest.param(True, id="compiled")]


@pytest.mark.parametrize("compiled", KERNELS)
@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_bytes_kernel_is_none_for_equal_rates(compiled: bool, rate: int) -> None:
    assert Resampler(rate, rate, compiled=compiled).bytes_kernel() is None


@pytest.mark.parametrize("compiled", KERNELS)
@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (8000, 24000), (48000, 16000)]
)
@pytest.mark.parametrize("sizes", ["20ms", "odd"])
def test_bytes_kernel_equals_process(
    compiled: bool, in_rate: int, out_rate: int, sizes: str
) -> None:
    fmt = AudioFormat(Encoding.L16, in_rate)
    chunks = cut(speech_at(in_rate)[: 2 * in_rate], chunkings(fmt)[sizes])
    by_kernel = Resampler(in_rate, out_rate, compiled=compiled)
    by_process = Resampler(in_rate, out_rate, compiled=compiled)
    kernel = by_kernel.bytes_kernel()
    assert kernel is not None
    assert by_kernel.compiled is compiled
    for chunk in chunks:
        assert kernel(chunk) == by_process.process(chunk)
    assert by_kernel.flush() == by_process.flush()  # the kernel kept the stream's count
    # After flush (a reset), the same kernel starts a new stream.
    for chunk in chunks[:5]:
        assert kernel(chunk) == by_process.process(chunk)
