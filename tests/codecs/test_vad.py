"""VAD on real speech (the espeak-ng fixture) and its hangover smoothing."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from loadtest.audio import FIXTURE
from rymi_codecs import (
    L16_16K,
    InvalidAudioError,
    InvalidSettingError,
    SpeechEnded,
    SpeechStarted,
    UnsupportedFormatError,
    VadEvent,
    VoiceActivityDetector,
    rms_dbfs,
)

FRAME = 640  # 20 ms at 16 kHz


def speech_fixture() -> bytes:
    """The fixture's PCM (made by scripts/make_speech_fixture.sh): 16 kHz mono 16-bit."""
    with wave.open(str(FIXTURE), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


def frames(pcm: bytes, size: int = FRAME) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def energy_segments(pcm: bytes) -> list[tuple[int, int]]:
    """Reference speech segments (ms) from frame energy, joining gaps under 300 ms."""
    loud = [i * 20 for i, f in enumerate(frames(pcm)) if rms_dbfs(f, L16_16K) > -50]
    segments: list[tuple[int, int]] = []
    for t in loud:
        if segments and t - segments[-1][1] < 300:
            segments[-1] = (segments[-1][0], t + 20)
        else:
            segments.append((t, t + 20))
    return segments


def run(vad: VoiceActivityDetector, pcm: bytes) -> list[VadEvent]:
    events = [e for f in frames(pcm, vad.frame_bytes) if (e := vad.process(f)) is not None]
    closing = vad.finish()
    return events + ([closing] if closing else [])


def test_fixture_has_two_phrases_with_a_gap() -> None:
    (s1, e1), (s2, e2) = energy_segments(speech_fixture())
    assert s1 >= 400
    assert s2 - e1 >= 900
    assert e2 - s2 >= 1500


def test_transitions_land_where_the_speech_is() -> None:
    pcm = speech_fixture()
    events = run(VoiceActivityDetector(16000, 20, aggressiveness=2), pcm)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded, SpeechStarted, SpeechEnded]
    reference = energy_segments(pcm)
    for (start, end), (ref_start, ref_end) in zip(
        zip(events[::2], events[1::2], strict=True), reference, strict=True
    ):
        assert isinstance(start, SpeechStarted)
        assert isinstance(end, SpeechEnded)
        assert abs(start.start_ms - ref_start) <= 100
        assert start.detected_ms == start.start_ms + 3 * 20  # start_frames=3
        assert abs(end.end_ms - ref_end) <= 200
        assert end.detected_ms == end.end_ms + 15 * 20  # end_frames=15
    # The silence between the phrases is seen as silence.
    assert events[2].start_ms - events[1].end_ms >= 900  # type: ignore[union-attr]


@pytest.mark.parametrize(("rate", "frame_ms"), [(8000, 10), (8000, 30), (32000, 20), (48000, 20)])
def test_other_rates_and_durations(rate: int, frame_ms: int) -> None:
    pcm16k = np.frombuffer(speech_fixture(), dtype="<i2")
    # Sample-and-hold / decimate: crude, but speech stays speech at every rate.
    idx = (np.arange(len(pcm16k) * rate // 16000) * 16000 // rate).astype(np.int64)
    pcm = pcm16k[idx].tobytes()
    events = run(VoiceActivityDetector(rate, frame_ms, 1, 2, 30 // frame_ms * 10), pcm)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded] * 2


def expected_events(raw: list[bool], start: int, end: int) -> list[tuple[str, int, int]]:
    """Independent statement of the hangover rule over raw per-frame decisions (20 ms)."""
    events, speaking, i = [], False, 0
    while i < len(raw):
        need = end if speaking else start
        window = raw[i : i + need]
        if len(window) == need and all(v != speaking for v in window):
            speaking = not speaking
            kind = "start" if speaking else "end"
            events.append((kind, i * 20, (i + need) * 20))
            i += need
        else:
            i += 1
    return events


@pytest.mark.parametrize(("start", "end"), [(1, 1), (3, 4), (2, 10), (5, 25)])
def test_hangover_follows_the_rule(start: int, end: int) -> None:
    # WebRTC's VAD has its own memory, so the raw decisions are taken from a twin detector
    # fed the same frames; the smoothing over them is what is under test.
    pcm = speech_fixture()
    stream = frames(pcm)
    twin = VoiceActivityDetector(aggressiveness=3)
    raw = [twin.is_speech(f) for f in stream]
    vad = VoiceActivityDetector(aggressiveness=3, start_frames=start, end_frames=end)
    got = []
    for f in stream:
        event = vad.process(f)
        if isinstance(event, SpeechStarted):
            got.append(("start", event.start_ms, event.detected_ms))
        elif isinstance(event, SpeechEnded):
            got.append(("end", event.end_ms, event.detected_ms))
    assert got == expected_events(raw, start, end)
    assert len(got) >= 4  # the rule was exercised: two phrases at least
    assert vad.speaking == (got[-1][0] == "start")


def test_finish_closes_open_speech_and_resets() -> None:
    vad = VoiceActivityDetector(start_frames=1)
    speech = next(f for f in frames(speech_fixture()) if vad.is_speech(f))
    assert isinstance(vad.process(speech), SpeechStarted)
    assert vad.finish() == SpeechEnded(end_ms=20, detected_ms=20)
    assert vad.time_ms == 0
    assert not vad.speaking
    assert vad.finish() is None


def test_events_are_frozen() -> None:
    event = SpeechStarted(0, 60)
    with pytest.raises(AttributeError):
        event.start_ms = 5  # type: ignore[misc]


def test_accepts_bytearray_and_memoryview() -> None:
    vad = VoiceActivityDetector()
    assert vad.is_speech(bytearray(FRAME)) is False
    assert vad.is_speech(memoryview(bytes(FRAME))) is False


def test_wrong_frame_sizes() -> None:
    vad = VoiceActivityDetector(16000, 20)
    with pytest.raises(
        InvalidAudioError, match=r"20 ms PCM16 frame at 16000 Hz \(640 bytes\), got 320"
    ):
        vad.process(bytes(320))
    with pytest.raises(InvalidAudioError, match="even byte count"):
        vad.process(bytes(639))
    assert vad.time_ms == 0  # rejected frames are not counted


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"sample_rate": 24000},
            UnsupportedFormatError,
            "expected one of 8000, 16000, 32000, 48000",
        ),
        ({"frame_ms": 40}, UnsupportedFormatError, "expected one of 10, 20, 30 ms"),
        ({"aggressiveness": 4}, InvalidSettingError, "aggressiveness 0, 1, 2 or 3, got 4"),
        ({"aggressiveness": True}, InvalidSettingError, "got True"),
        ({"start_frames": 0}, InvalidSettingError, "start_frames >= 1, got 0"),
        ({"end_frames": -2}, InvalidSettingError, "end_frames >= 1, got -2"),
    ],
)
def test_bad_settings(kwargs: dict[str, int], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        VoiceActivityDetector(**kwargs)
