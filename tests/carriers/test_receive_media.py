"""``MediaStream.receive_media`` (the per-frame path) against ``receive`` (the general one).

Two fresh streams of one carrier get the same messages, one through ``receive`` and one
through ``receive_media``, and every message must have the same outcome on both: the
audio payload (``receive``'s one :class:`AudioReceived`, returned as the bytes
themselves), the same events, or the same :class:`CarrierProtocolError` (same carrier,
text and close code). Each test runs on every carrier format, through the adapter's
override and through the base class's default (which the overrides replace).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.carriers import (
    AudioReceived,
    CarrierAdapter,
    ClearPlayback,
    Command,
    DtmfReceived,
    Mark,
    MarkPlayed,
    MediaStream,
    PlayAudio,
    PlaybackCleared,
    StreamStarted,
    StreamStopped,
    WireMessage,
    get,
)
from gateway.carriers.base import DEFAULT_MAX_MESSAGE_BYTES, CarrierSide
from gateway.carriers.plivo import PlivoAdapter
from gateway.carriers.stream import JsonMediaStream, State
from gateway.errors import CarrierProtocolError, CloseCode
from rymi_codecs import L16_8K, L16_16K, L16_24K, MULAW_8K, AudioFormat

PROTOCOL = int(CloseCode.PROTOCOL_ERROR)
INVALID = int(CloseCode.INVALID_PAYLOAD)
UNSUPPORTED = int(CloseCode.UNSUPPORTED_DATA)
TOO_BIG = int(CloseCode.MESSAGE_TOO_BIG)


@dataclass(frozen=True)
class Kind:
    """One carrier in one audio format."""

    name: str
    adapter: CarrierAdapter
    fmt: AudioFormat

    @property
    def carrier(self) -> str:
        return self.adapter.name

    @property
    def frame(self) -> int:
        return self.fmt.bytes_per_frame()

    def side(self) -> CarrierSide:
        return self.adapter.simulate_carrier("call-1", {"tenant": "t1"}, rate=self.fmt.sample_rate)


KINDS = [
    Kind("twilio", get("twilio"), MULAW_8K),
    Kind("plivo-mulaw", get("plivo"), MULAW_8K),
    Kind("plivo-l16-8k", PlivoAdapter("audio/x-l16;rate=8000"), L16_8K),
    Kind("plivo-l16-16k", PlivoAdapter("audio/x-l16;rate=16000"), L16_16K),
    Kind("vonage-8k", get("vonage"), L16_8K),
    Kind("vonage-16k", get("vonage"), L16_16K),
    Kind("vonage-24k", get("vonage"), L16_24K),
]
JSON_KINDS = [k for k in KINDS if k.carrier != "vonage"]  # text-only carriers
VONAGE_KINDS = [k for k in KINDS if k.carrier == "vonage"]


def _override(stream: MediaStream, message: WireMessage) -> bytes | list[Any]:
    return stream.receive_media(message)


def _base(stream: MediaStream, message: WireMessage) -> bytes | list[Any]:
    return MediaStream.receive_media(stream, message)


PATHS = {"override": _override, "base": _base}
PerFrame = Callable[[MediaStream, WireMessage], bytes | list[Any]]

Outcome = tuple[Any, ...]
"""("audio", type, payload), ("events", [...]) or ("error", carrier, text, close_code)."""


def _error(exc: CarrierProtocolError) -> Outcome:
    return ("error", exc.carrier, str(exc), exc.close_code)


def general(stream: MediaStream, message: WireMessage) -> Outcome:
    try:
        events = stream.receive(message)
    except CarrierProtocolError as exc:
        return _error(exc)
    if len(events) == 1 and type(events[0]) is AudioReceived:
        return ("audio", type(events[0].payload), events[0].payload)
    return ("events", events)


def per_frame(path: PerFrame, stream: MediaStream, message: WireMessage) -> Outcome:
    try:
        result = path(stream, message)
    except CarrierProtocolError as exc:
        return _error(exc)
    if isinstance(result, list):
        return ("events", result)
    return ("audio", type(result), result)


def audio(payload: bytes) -> Outcome:
    return ("audio", bytes, payload)


def code(outcome: Outcome) -> int | None:
    """The close code of an error outcome, else None."""
    return outcome[3] if outcome[0] == "error" else None


def state(stream: MediaStream) -> State:
    assert isinstance(stream, JsonMediaStream)
    return stream.state


class Pair:
    """A carrier side and two gateway streams fed the same messages, one per path."""

    def __init__(
        self, kind: Kind, path: PerFrame, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.kind = kind
        self.side = kind.side()
        self.path = path
        self.slow = kind.adapter.open_stream(max_message_bytes=max_message_bytes)
        self.fast = kind.adapter.open_stream(max_message_bytes=max_message_bytes)

    def feed(self, *messages: WireMessage) -> list[Outcome]:
        """Each message to both streams; asserts equal outcomes and states."""
        outcomes = []
        for message in messages:
            expected = general(self.slow, message)
            got = per_frame(self.path, self.fast, message)
            assert got == expected, f"{self.kind.name}: {message!r:.160}"
            assert state(self.fast) is state(self.slow)
            outcomes.append(expected)
        return outcomes

    def one(self, message: WireMessage) -> Outcome:
        (outcome,) = self.feed(message)
        return outcome

    def open(self) -> None:
        outcomes = self.feed(*self.side.open())
        assert isinstance(outcomes[-1][1][0], StreamStarted)

    def send(self, command: Command) -> list[WireMessage]:
        """``command`` on both streams (same wire messages); returns the carrier's replies."""
        sent = self.slow.send(command)
        assert self.fast.send(command) == sent
        return [reply for message in sent for reply in self.side.receive(message)]

    def close(self) -> list[Any]:
        events = self.slow.connection_closed()
        assert self.fast.connection_closed() == events
        return events


@pytest.fixture(params=list(PATHS))
def path(request: pytest.FixtureRequest) -> PerFrame:
    """The adapter's ``receive_media`` override, then the base class's default."""
    return PATHS[request.param]


def ids(kinds: list[Kind]) -> list[str]:
    return [k.name for k in kinds]


def speechlike(size: int, seed: int) -> bytes:
    """``size`` bytes that are not all alike (so payloads cannot match by accident)."""
    return bytes((i * 37 + seed * 101 + i // 7) % 256 for i in range(size))


def edit(message: WireMessage, change: Callable[[dict[str, Any]], None]) -> str:
    """A JSON text message with ``change`` applied to its parsed form."""
    assert isinstance(message, str)
    obj = json.loads(message)
    change(obj)
    return json.dumps(obj)


def set_stream_id(value: object) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        key = "streamSid" if "streamSid" in obj else "streamId"
        if value is ...:
            del obj[key]
        else:
            obj[key] = value

    return change


def set_track(track: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        obj["media"]["track"] = track

    return change


def mark_echo(kind: Kind, side: CarrierSide, name: str) -> str:
    """The carrier's acknowledgement of our mark ``name`` (built here, not played)."""
    stream_id = getattr(side, "stream_sid", getattr(side, "stream_id", ""))
    if kind.carrier == "twilio":
        return json.dumps({"event": "mark", "streamSid": stream_id, "mark": {"name": name}})
    if kind.carrier == "plivo":
        return json.dumps({"event": "playedStream", "streamId": stream_id, "name": name})
    return json.dumps({"event": "websocket:notify", "payload": {"rymi_mark": name}})


# -- audio of a started stream -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
def test_audio_of_a_started_stream_comes_back_as_its_payload(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    pair.open()
    payloads = [speechlike(kind.frame, seed) for seed in range(5)]
    outcomes = pair.feed(*(pair.side.audio(p) for p in payloads))
    assert outcomes == [audio(p) for p in payloads]


@pytest.mark.parametrize("kind", JSON_KINDS, ids=ids(JSON_KINDS))
def test_text_audio_of_any_whole_sample_size_is_its_payload(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    pair.open()
    width = kind.fmt.bytes_per_sample
    payloads = [b"", speechlike(width, 1), speechlike(3 * kind.frame, 2), speechlike(14 * width, 3)]
    assert pair.feed(*(pair.side.audio(p) for p in payloads)) == [audio(p) for p in payloads]


@pytest.mark.parametrize("kind", JSON_KINDS, ids=ids(JSON_KINDS))
@pytest.mark.parametrize("stream_id", [None, ...], ids=["null", "missing"])
def test_media_without_a_stream_id_is_accepted(
    kind: Kind, path: PerFrame, stream_id: object
) -> None:
    pair = Pair(kind, path)
    pair.open()
    payload = speechlike(kind.frame, 4)
    assert pair.one(edit(pair.side.audio(payload), set_stream_id(stream_id))) == audio(payload)


# -- audio the stream refuses or ignores -----------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
def test_media_before_start_is_a_protocol_error(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    early = pair.side.audio(speechlike(kind.frame, 5))
    assert code(pair.one(early)) == PROTOCOL
    pair.open()  # the stream is still new: it starts, and then takes audio
    assert pair.one(early) == audio(speechlike(kind.frame, 5))


def test_twilio_media_between_connected_and_start_is_a_protocol_error(path: PerFrame) -> None:
    pair = Pair(KINDS[0], path)
    connected, start = pair.side.open()
    early = pair.side.audio(bytes(160))
    assert pair.feed(connected) == [("events", [])]
    assert code(pair.one(early)) == PROTOCOL
    outbound = edit(early, set_track("outbound"))
    assert code(pair.one(outbound)) == PROTOCOL  # the order is checked before the track
    assert isinstance(pair.one(start)[1][0], StreamStarted)


@pytest.mark.parametrize("kind", JSON_KINDS, ids=ids(JSON_KINDS))
@pytest.mark.parametrize("other", ["MZ-another", "", "st-another"])
def test_media_for_another_stream_is_a_protocol_error(
    kind: Kind, path: PerFrame, other: str
) -> None:
    pair = Pair(kind, path)
    pair.open()
    message = edit(pair.side.audio(speechlike(kind.frame, 6)), set_stream_id(other))
    outcome = pair.one(message)
    assert code(outcome) == PROTOCOL
    assert "another stream" in outcome[2]
    outbound = edit(message, set_track("outbound"))
    assert code(pair.one(outbound)) == PROTOCOL  # the stream is checked before the track


@pytest.mark.parametrize("kind", JSON_KINDS, ids=ids(JSON_KINDS))
@pytest.mark.parametrize("track", ["outbound", "both", ""])
def test_media_of_another_track_gives_no_event(kind: Kind, path: PerFrame, track: str) -> None:
    pair = Pair(kind, path)
    pair.open()
    message = edit(pair.side.audio(speechlike(kind.frame, 7)), set_track(track))
    assert pair.one(message) == ("events", [])


@pytest.mark.parametrize("kind", JSON_KINDS[1:], ids=ids(JSON_KINDS[1:]))
@pytest.mark.parametrize("size", [1, 3, 161, 641])
def test_plivo_media_of_part_samples(kind: Kind, path: PerFrame, size: int) -> None:
    pair = Pair(kind, path)
    pair.open()
    payload = speechlike(size, 8)
    outcome = pair.one(pair.side.audio(payload))
    if kind.fmt.bytes_per_sample == 2:
        assert code(outcome) == INVALID
        assert "whole samples" in outcome[2]
    else:
        assert outcome == audio(payload)  # μ-law: every byte is a sample


def test_plivo_l16_part_samples_on_another_track_give_no_event(path: PerFrame) -> None:
    pair = Pair(KINDS[2], path)
    pair.open()
    message = edit(pair.side.audio(bytes(3)), set_track("outbound"))
    assert pair.one(message) == ("events", [])  # the track is checked before the size


# -- size, encoding and frame type --------------------------------------------------------


def padded(message: WireMessage, length: int) -> str:
    """``message`` with trailing JSON whitespace up to ``length`` characters."""
    assert isinstance(message, str)
    assert len(message) <= length
    return message + " " * (length - len(message))


@pytest.mark.parametrize("kind", JSON_KINDS, ids=ids(JSON_KINDS))
def test_media_up_to_the_size_limit_is_taken_and_over_it_refused(
    kind: Kind, path: PerFrame
) -> None:
    pair = Pair(kind, path)
    pair.open()
    payload = speechlike(kind.frame, 9)
    message = pair.side.audio(payload)
    assert pair.one(padded(message, DEFAULT_MAX_MESSAGE_BYTES)) == audio(payload)
    outcome = pair.one(padded(message, DEFAULT_MAX_MESSAGE_BYTES + 1))
    assert code(outcome) == TOO_BIG
    huge = pair.side.audio(bytes(60_000))  # 80,000 characters of base64
    assert code(pair.one(huge)) == TOO_BIG
    assert pair.one(message) == audio(payload)  # the refusals changed nothing


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
@pytest.mark.parametrize("opened", [False, True], ids=["new", "started"])
def test_oversize_text_is_refused_in_any_state(kind: Kind, path: PerFrame, opened: bool) -> None:
    pair = Pair(kind, path, max_message_bytes=1000)
    if opened:
        pair.open()
    message = json.dumps({"event": "nothing-we-know", "pad": "x" * 1000})
    assert code(pair.one(message)) == TOO_BIG


NOT_JSON = [
    "",
    "{",
    '{"event":',
    "media",
    "\x00",
    '{"event":"media","x":"\ud800"}',  # a lone surrogate: not UTF-8
    "[]",
    "null",
    "42",
    '{"event": 5}',
    '{"no_event": true}',
]


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
@pytest.mark.parametrize("opened", [False, True], ids=["new", "started"])
def test_text_that_is_not_an_event_object_is_invalid(
    kind: Kind, path: PerFrame, opened: bool
) -> None:
    pair = Pair(kind, path)
    if opened:
        pair.open()
    assert [code(o) for o in pair.feed(*NOT_JSON)] == [INVALID] * len(NOT_JSON)


@pytest.mark.parametrize("kind", JSON_KINDS, ids=ids(JSON_KINDS))
def test_media_with_a_bad_shape_is_invalid(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    pair.open()
    good = pair.side.audio(speechlike(kind.frame, 10))

    def bad_base64(obj: dict[str, Any]) -> None:
        obj["media"]["payload"] = "@@@"

    def no_media(obj: dict[str, Any]) -> None:
        del obj["media"]

    def payload_number(obj: dict[str, Any]) -> None:
        obj["media"]["payload"] = 5

    def stream_id_number(obj: dict[str, Any]) -> None:
        set_stream_id(7)(obj)

    changes = [bad_base64, no_media, payload_number, stream_id_number]
    outcomes = pair.feed(*(edit(good, c) for c in changes))
    assert [code(o) for o in outcomes] == [INVALID] * len(changes)


@pytest.mark.parametrize("kind", JSON_KINDS, ids=ids(JSON_KINDS))
@pytest.mark.parametrize("opened", [False, True], ids=["new", "started"])
def test_a_binary_frame_is_unsupported_on_a_text_carrier(
    kind: Kind, path: PerFrame, opened: bool
) -> None:
    pair = Pair(kind, path)
    if opened:
        pair.open()
    text = pair.side.audio(speechlike(kind.frame, 11))
    assert isinstance(text, str)
    frames = [bytes(kind.frame), text.encode(), b"", bytes(70_000)]
    assert [code(o) for o in pair.feed(*frames)] == [UNSUPPORTED] * len(frames)


# -- events that are not audio ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
def test_unknown_events_are_ignored_until_the_stream_stops(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    unknown = ['{"event":"someday"}', '{"event":"media2","media":{"payload":"AAAA"}}']
    assert pair.feed(*unknown) == [("events", [])] * 2
    pair.open()
    assert pair.feed(*unknown) == [("events", [])] * 2
    stop = pair.side.stop()
    if stop:
        assert pair.feed(*stop) == [("events", [StreamStopped("stop")])]
    else:
        assert pair.close() == [StreamStopped("closed")]
    assert [code(o) for o in pair.feed(*unknown)] == [PROTOCOL] * 2


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
def test_dtmf_marks_clear_and_stop_after_audio(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    pair.open()
    side = pair.side
    first, second = speechlike(kind.frame, 12), speechlike(kind.frame, 13)
    assert pair.one(side.audio(first)) == audio(first)
    assert pair.one(side.dtmf("7")) == ("events", [DtmfReceived(*_dtmf_fields(kind, "7"))])
    assert pair.one(side.audio(second)) == audio(second)
    # A mark played: acknowledged once its audio has played.
    assert pair.send(PlayAudio(bytes(kind.frame))) == []
    assert pair.send(Mark("m1")) == []
    (echo,) = side.advance(20)
    assert pair.one(echo) == ("events", [MarkPlayed("m1")])
    assert pair.one(mark_echo(kind, side, "never-sent")) == ("events", [])
    # A mark cleared: the clear's acknowledgement names it.
    pair.send(PlayAudio(bytes(kind.frame)))
    pair.send(Mark("m2"))
    replies = pair.send(ClearPlayback()) + side.advance(1000)
    assert [o for o in pair.feed(*replies) if o != ("events", [])] == [
        ("events", [PlaybackCleared(("m2",))])
    ]
    assert pair.one(side.audio(first)) == audio(first)
    stop = side.stop()
    if stop:  # Twilio, Plivo: a stop message, and nothing after it
        assert pair.feed(*stop) == [("events", [StreamStopped("stop")])]
        after = [side.audio(first), side.dtmf("1"), mark_echo(kind, side, "m3"), *stop]
        assert [code(o) for o in pair.feed(*after)] == [PROTOCOL] * len(after)
        assert pair.close() == []
    else:  # Vonage: the socket closing is the end
        assert pair.close() == [StreamStopped("closed")]
        after = [side.audio(first), side.dtmf("1"), mark_echo(kind, side, "m3")]
        assert [code(o) for o in pair.feed(*after)] == [PROTOCOL] * len(after)


def _dtmf_fields(kind: Kind, digit: str) -> tuple[str, int | None]:
    return (digit, 260) if kind.carrier == "vonage" else (digit, None)


@pytest.mark.parametrize("kind", JSON_KINDS, ids=ids(JSON_KINDS))
def test_a_second_start_is_a_protocol_error(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    pair.open()
    start = pair.side.open()[-1]
    assert code(pair.one(start)) == PROTOCOL
    payload = speechlike(kind.frame, 14)
    assert pair.one(pair.side.audio(payload)) == audio(payload)


# -- Vonage binary frames ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", VONAGE_KINDS, ids=ids(VONAGE_KINDS))
def test_vonage_frames_of_another_size_are_invalid(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    pair.open()
    sizes = [0, 1, kind.frame - 2, kind.frame - 1, kind.frame + 1, kind.frame + 2, 2 * kind.frame]
    sizes += [f.bytes_per_frame() for f in (L16_8K, L16_16K, L16_24K) if f != kind.fmt]
    outcomes = pair.feed(*(speechlike(size, size) for size in sizes))
    assert [code(o) for o in outcomes] == [INVALID] * len(sizes)
    assert all(f"{kind.frame} (20 ms)" in o[2] for o in outcomes)
    payload = speechlike(kind.frame, 15)
    assert pair.one(payload) == audio(payload)


@pytest.mark.parametrize("kind", VONAGE_KINDS, ids=ids(VONAGE_KINDS))
def test_vonage_frames_before_connected_are_protocol_errors(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    frames = [bytes(kind.frame), bytes(L16_16K.bytes_per_frame()), b"", bytes(3)]
    outcomes = pair.feed(*frames)
    assert [code(o) for o in outcomes] == [PROTOCOL] * len(frames)
    assert all("while the stream is new" in o[2] for o in outcomes)
    pair.open()
    assert pair.one(bytes(kind.frame)) == audio(bytes(kind.frame))


@pytest.mark.parametrize("kind", VONAGE_KINDS, ids=ids(VONAGE_KINDS))
def test_vonage_text_before_connected_is_a_protocol_error(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    outcomes = pair.feed(pair.side.dtmf("3"), '{"event":"websocket:cleared"}')
    assert [code(o) for o in outcomes] == [PROTOCOL, PROTOCOL]


@pytest.mark.parametrize("kind", VONAGE_KINDS, ids=ids(VONAGE_KINDS))
def test_vonage_frames_after_close_are_protocol_errors(kind: Kind, path: PerFrame) -> None:
    pair = Pair(kind, path)
    pair.open()
    assert pair.close() == [StreamStopped("closed")]
    assert code(pair.one(bytes(kind.frame))) == PROTOCOL


# -- any message sequence -------------------------------------------------------------------

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
REPLACEMENTS: list[Any] = [
    None,
    "",
    "x",
    "outbound",
    "inbound",
    "media",
    "stop",
    "MZ-another",
    0,
    -1,
    1.5,
    True,
    [],
    {},
    "AAAA",
    "AAA",
    "AA==",
    "/w==",
    "@@",
    "audio/x-l16",
    "x" * 300,
]


def seeds(kind: Kind) -> list[WireMessage]:
    """Real messages of a whole call, from the carrier side, plus acknowledgements."""
    side = kind.side()
    width = kind.fmt.bytes_per_sample
    messages = [*side.open(), side.audio(speechlike(kind.frame, 16)), side.dtmf("5")]
    if kind.carrier != "vonage":
        messages += [side.audio(b""), side.audio(speechlike(3 * width, 17))]
        messages += [side.audio(bytes(width + 1))]
    messages += [mark_echo(kind, side, "m"), *side.stop()]
    extra = {
        "twilio": ['{"event":"mark","streamSid":"x","mark":{"name":"rymi-clear-1"}}'],
        "plivo": ['{"event":"clearedAudio"}', '{"event":"played","name":"m"}'],
        "vonage": ['{"event":"websocket:cleared"}', '{"event":"websocket:notify"}'],
    }
    return messages + extra[kind.carrier]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not isinstance(value, dict):
        return [prefix]
    out = [prefix] if prefix else []
    for key, item in value.items():
        out += _paths(item, (*prefix, key))
    return out


@st.composite
def mutated(draw: st.DrawFn, message: str) -> str:
    """``message`` with a few fields dropped or replaced."""
    obj = copy.deepcopy(json.loads(message))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(obj)
        if not paths:
            break
        *parents, key = draw(st.sampled_from(paths))
        node = obj
        for parent in parents:
            node = node[parent]
        if not isinstance(node, dict) or key not in node:
            continue
        if draw(st.booleans()):
            del node[key]
        else:
            node[key] = draw(st.sampled_from(REPLACEMENTS) | st.text(max_size=6))
    return json.dumps(obj)


@cache
def messages(kind: Kind) -> st.SearchStrategy[list[WireMessage]]:
    real = seeds(kind)
    texts = [m for m in real if isinstance(m, str)]
    sizes = [0, 1, 3, 160, 320, 640, 960, kind.frame - 1, kind.frame + 1]
    one: st.SearchStrategy[WireMessage] = st.one_of(
        st.sampled_from(real),
        st.sampled_from(texts).flatmap(mutated),
        st.sampled_from(sizes).map(bytes),
        st.binary(max_size=64),
        st.text(max_size=24),
    )
    return st.lists(one, min_size=1, max_size=10)


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
@FUZZ
@given(data=st.data())
def test_any_message_sequence_has_the_same_outcome_on_both_paths(
    kind: Kind, data: st.DataObject
) -> None:
    # The adapters' overrides only: the base default is receive() itself, rewrapped.
    limit = data.draw(st.sampled_from([DEFAULT_MAX_MESSAGE_BYTES, 400, 120]), label="limit")
    pair = Pair(kind, _override, max_message_bytes=limit)
    if data.draw(st.booleans(), label="opened"):
        pair.feed(*pair.side.open())
    pair.feed(*data.draw(messages(kind), label="messages"))  # asserts each outcome
    pair.close()
