"""The call's audio both ways with no I/O (gateway.media): the paced writer's release."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

from gateway.bridge.protocol import MarkPlayed
from gateway.carriers.events import Mark
from gateway.media import AgentMedia, CallerMedia
from rymi_codecs import MULAW_8K, AgentToCaller

_AGENT_RATE = 16000
_FRAME_16K = 640  # bytes of 20 ms PCM16 at 16 kHz
SPEECH_FIXTURE = Path(__file__).parents[2] / "loadtest" / "data" / "two_phrases_16k.wav"


def _tone(frames: int, amplitude: int = 8000) -> bytes:
    samples = frames * _FRAME_16K // 2
    return b"".join(
        struct.pack("<h", round(amplitude * math.sin(2 * math.pi * 440 * i / _AGENT_RATE)))
        for i in range(samples)
    )


def test_release_without_marks_gives_frames_and_nothing_to_build() -> None:
    media = AgentMedia(_AGENT_RATE, MULAW_8K, lead_frames=3)
    media.audio(_tone(5), 10.0)
    frames, marks = media.release(10.0)
    assert marks is None
    assert len(frames) == 3  # the lead goes at once
    assert all(len(frame) == MULAW_8K.bytes_per_frame() for frame in frames)
    assert media.release(10.0) == ([], None)  # nothing more due yet
    later, _ = media.release(10.0 + 0.020)
    assert len(later) == 1


def test_release_puts_a_mark_after_its_audio_and_reports_it_when_heard() -> None:
    media = AgentMedia(_AGENT_RATE, MULAW_8K, lead_frames=3)
    media.audio(_tone(2), 10.0)
    media.mark("m1", 10.0)
    frames, marks = media.release(10.0)
    # Two frames of tone and the resampler's tail, padded to a frame: the mark is after all.
    assert len(frames) == 3
    assert marks is not None
    assert marks.carrier == [Mark("m1")]
    assert marks.agent == []
    _, early = media.release(10.059)
    assert early is not None  # a mark is pending: outputs are built...
    assert early.agent == []  # ...but the ear has not reached it
    _, heard = media.release(10.0 + 0.061)  # the ear is past the three frames
    assert heard is not None
    assert heard.carrier == []
    assert heard.agent == [MarkPlayed(name="m1", heard_ms=60, position_ms=60)]
    assert media.release(10.1) == ([], None)  # nothing pending any more


def test_caller_audio_builds_outputs_only_on_a_vad_transition() -> None:
    caller = CallerMedia(MULAW_8K, _AGENT_RATE, vad=True)
    agent = AgentMedia(_AGENT_RATE, MULAW_8K)
    outputs = []
    for i, frame in enumerate(_speech_as_mulaw()):
        pcm, out = caller.audio(frame, agent, barge_in=True, now=1.0 + i / 50)
        assert len(pcm) == _FRAME_16K
        if out is not None:
            outputs.append(out)
    events = [type(message).__name__ for out in outputs for message in out.agent]
    # Two phrases: each frame with a transition built outputs, every other frame none.
    assert events == ["SpeechStarted", "SpeechEnded", "SpeechStarted", "SpeechEnded"]
    assert len(outputs) == 4


def _speech_as_mulaw() -> list[bytes]:
    """The speech fixture as the caller's 20 ms μ-law frames (8 kHz)."""
    with wave.open(str(SPEECH_FIXTURE), "rb") as w:
        pcm = w.readframes(w.getnframes())
    chain = AgentToCaller(_AGENT_RATE, MULAW_8K)
    return chain.process(pcm) + chain.flush(pad=True)
