"""The echo agent's core, sans I/O: utterances, pre-roll, pacing, barge-in, keys, memory."""

from __future__ import annotations

import msgspec
import pytest

from gateway.bridge.echo import EchoCore
from gateway.bridge.link import AgentItem
from gateway.bridge.protocol import (
    AudioSpec,
    BargeIn,
    Dtmf,
    Error,
    Hangup,
    Mark,
    MarkCleared,
    MarkPlayed,
    SpeechStarted,
    Stop,
    Transcript,
)
from rymi_codecs import Resampler
from tests.bridge.conftest import FRAME_16K, call_audio, frames, make_start, speech


def run(core: EchoCore, audio: list[bytes]) -> list[list[AgentItem]]:
    """Feed frames; what the core answered to each."""
    return [core.receive_audio(frame) for frame in audio]


def flat(answers: list[list[AgentItem]]) -> list[AgentItem]:
    return [item for answer in answers for item in answer]


def audio_bytes(items: list[AgentItem]) -> int:
    return sum(len(i) for i in items if isinstance(i, bytes))


def first_utterance(pre_roll_ms: int) -> bytes:
    items = flat(run(EchoCore(make_start(), pre_roll_ms=pre_roll_ms), call_audio()))
    return b"".join(i for i in items[: items.index(Mark(name="utt-1"))] if isinstance(i, bytes))


def test_each_utterance_comes_back_once() -> None:
    core = EchoCore(make_start(), pre_roll_ms=200)
    items = flat(run(core, call_audio()))
    marks = [i for i in items if isinstance(i, Mark)]
    texts = [i.text for i in items if isinstance(i, Transcript)]
    assert marks == [Mark(name="utt-1"), Mark(name="utt-2")]
    assert texts == ["<echo of utterance 1, 2980 ms>", "<echo of utterance 2, 2660 ms>"]
    assert audio_bytes(items) == (2980 + 2660) * 32
    assert core.stats().utterances == 2
    assert core.stats().echoed_ms == 2980 + 2660


def test_pre_roll_starts_the_echo_earlier_in_the_caller_audio() -> None:
    sent = speech()
    bare, rolled = first_utterance(0), first_utterance(200)
    assert sent.find(rolled) == sent.find(bare) - 200 * 32
    assert rolled[200 * 32 :] == bare


def test_the_same_audio_in_any_chunking_gives_the_same_echo() -> None:
    whole = flat(run(EchoCore(make_start()), call_audio()))
    odd = flat(run(EchoCore(make_start()), frames(b"".join(call_audio()), 14)))
    assert b"".join(i for i in odd if isinstance(i, bytes)) == b"".join(
        i for i in whole if isinstance(i, bytes)
    )
    assert [i for i in odd if not isinstance(i, bytes)] == [
        i for i in whole if not isinstance(i, bytes)
    ]


def test_playback_sends_a_lead_then_20_ms_per_caller_frame() -> None:
    answers = run(EchoCore(make_start(), lead_ms=100), call_audio())
    first = next(k for k, a in enumerate(answers) if a)
    assert isinstance(answers[first][0], Transcript)
    assert audio_bytes(answers[first]) == (100 + 20) * 32
    steady = answers[first + 1 : first + 50]
    assert all(audio_bytes(a) == FRAME_16K for a in steady)


def test_barge_in_drops_the_rest_of_the_utterance_and_its_mark() -> None:
    core, audio = EchoCore(make_start()), call_audio()
    answers = run(core, audio[:200])
    played = audio_bytes(flat(answers))
    assert core.receive_message(BargeIn(heard_ms=0, discarded_ms=0)) == []
    rest = flat(run(core, audio[200:]))
    assert Mark(name="utt-1") not in rest
    assert Mark(name="utt-2") in rest
    assert played + audio_bytes(rest) < (2980 + 2660) * 32
    assert core.stats().barge_ins == 1


def test_silence_keeps_only_the_pre_roll_window() -> None:
    core = EchoCore(make_start(), pre_roll_ms=200)
    assert flat(run(core, [bytes(FRAME_16K)] * 3000)) == []  # a minute of silence
    assert core.buffered_ms <= 200 + 3 * 20


def test_a_long_utterance_is_played_back_in_pieces() -> None:
    core = EchoCore(make_start(), max_utterance_ms=1000)
    texts = [i.text for i in flat(run(core, call_audio())) if isinstance(i, Transcript)]
    lengths = [int(t.split(", ")[1].removesuffix(" ms>")) for t in texts]
    assert len(lengths) > 2
    assert max(lengths) <= 1000 + 200


def test_keys_collect_play_back_and_hang_up() -> None:
    core = EchoCore(make_start())
    assert core.receive_message(Dtmf(digits="4")) == [Transcript(role="agent", text="<dtmf 4>")]
    out = core.receive_message(Dtmf(digits="2#9*7"))
    assert out == [
        Transcript(role="agent", text="<dtmf 2>"),
        Dtmf(digits="42"),
        Transcript(role="agent", text="<dtmf #>"),
        Transcript(role="agent", text="<dtmf 9>"),
        Hangup(reason="caller_requested"),
    ]
    assert run(core, call_audio()) == [[]] * len(call_audio())  # hung up: silent
    assert core.stats().dtmf_digits == 5


def test_hash_with_nothing_collected_sends_no_dtmf() -> None:
    assert EchoCore(make_start()).receive_message(Dtmf(digits="#")) == [
        Transcript(role="agent", text="<dtmf #>")
    ]


def test_gateway_messages_are_counted_and_stop_ends_the_agent() -> None:
    core = EchoCore(make_start())
    for message in (
        MarkPlayed(name="a", heard_ms=1, position_ms=1),
        MarkCleared(name="b", heard_ms=0, position_ms=1),
        Error(code="dtmf_unsupported"),
        SpeechStarted(at_ms=20),
    ):
        assert core.receive_message(message) == []
    assert core.receive_message(Stop(reason="drain")) == []
    assert core.receive_audio(speech()) == []
    assert core.receive_message(Dtmf(digits="1")) == []
    stats = core.stats()
    assert (stats.marks_played, stats.marks_cleared, stats.errors) == (1, 1, 1)
    assert stats.stop_reason == "drain"
    assert core.buffered_ms == 0


@pytest.mark.parametrize("agent_rate", [16000, 24000])
def test_agent_audio_is_at_the_agent_rate(agent_rate: int) -> None:
    items = flat(run(EchoCore(make_start(agent_rate=agent_rate)), call_audio()))
    assert all(len(i) % 2 == 0 for i in items if isinstance(i, bytes))
    per_ms = agent_rate * 2 // 1000
    expected = (2980 + 2660) * per_ms
    assert abs(audio_bytes(items) - expected) <= 2 * 2 * per_ms  # resampler tail: < 2 ms each


def test_24k_caller_audio_is_detected_through_a_16k_vad() -> None:
    start = msgspec.structs.replace(make_start(), caller_audio=AudioSpec(sample_rate=24000))
    up = Resampler(16000, 24000)
    audio = frames(up.process(b"".join(call_audio())) + up.flush(), 960)
    items = flat(run(EchoCore(start), audio))
    assert [i for i in items if isinstance(i, Mark)] == [Mark(name="utt-1"), Mark(name="utt-2")]
    texts = [i.text for i in items if isinstance(i, Transcript)]
    spoken = sum(int(t.split(", ")[1].removesuffix(" ms>")) for t in texts)
    assert abs(spoken - (2980 + 2660)) <= 100  # the same speech, within a few VAD frames
    assert abs(audio_bytes(items) - spoken * 32) <= 2 * 2 * 32  # at the agent's 16 kHz
