"""Fuzz every media parser: only events or CarrierProtocolError may come out.

Each example feeds a fresh stream a sequence of at least 8 inputs (mutated real
messages, arbitrary JSON-ish text, raw text, raw bytes), and there are 1,250 examples
per parser, so each gateway-role parser sees at least 10,000 inputs per run.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.carriers import get
from gateway.carriers.events import (
    AudioReceived,
    DtmfReceived,
    MarkPlayed,
    PlaybackCleared,
    StreamStarted,
    StreamStopped,
)
from gateway.errors import CarrierProtocolError

EVENTS = (AudioReceived, DtmfReceived, MarkPlayed, PlaybackCleared, StreamStarted, StreamStopped)
INPUTS_PER_EXAMPLE = 8
EXAMPLES = 1250  # x 8 inputs = 10,000 per parser
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "AAAA", "@@@", "/w==", "audio/x-mulaw", "inbound", "1", "x" * 700])
)
json_values = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def templates(carrier: str) -> list[Any]:
    """Real messages from the carrier simulator, as parsed JSON (the mutation seeds)."""
    side = get(carrier).simulate_carrier("call-1", {"tenant": "t1"})
    frame = b"\x00" * (640 if carrier == "vonage" else 160)
    messages = [*side.open(), side.audio(frame), side.dtmf("5"), *side.stop()]
    extra: dict[str, list[Any]] = {
        "twilio": [{"event": "mark", "streamSid": "x", "mark": {"name": "m"}}],
        "plivo": [{"event": "playedStream", "name": "m"}, {"event": "clearedAudio"}],
        "vonage": [
            {"event": "websocket:cleared"},
            {"event": "websocket:notify", "payload": {"rymi_mark": "m"}},
        ],
    }
    seeds: list[Any] = [json.loads(m) for m in messages if isinstance(m, str)]
    return seeds + extra[carrier]


@st.composite
def mutated(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    choice = draw(st.integers(0, 9))
    if choice == 0 or depth > 3:
        return draw(json_values)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            op = draw(st.integers(0, 7))
            if op == 0:
                continue  # drop the field
            out[key] = draw(mutated(item, depth + 1)) if op == 1 else item
        return out
    return value


def inputs(carrier: str) -> st.SearchStrategy[list[str | bytes]]:
    seeds = templates(carrier)
    structured = st.sampled_from(seeds).flatmap(mutated).map(json.dumps)
    one = st.one_of(
        structured,
        st.sampled_from([json.dumps(s) for s in seeds]),
        json_values.map(json.dumps),
        st.text(max_size=40),
        st.binary(max_size=700),
        st.sampled_from([bytes(640), bytes(320), bytes(639)]),
    )
    return st.lists(one, min_size=INPUTS_PER_EXAMPLE, max_size=INPUTS_PER_EXAMPLE)


def check_stream(carrier: str, opening: bool, messages: list[str | bytes]) -> None:
    stream = get(carrier).open_stream(max_message_bytes=4096)
    if opening:
        for message in get(carrier).simulate_carrier("c", {}).open():
            stream.receive(message)
    codes: list[int] = []
    for message in messages:
        try:
            events = stream.receive(message)
        except CarrierProtocolError as exc:
            codes.append(exc.close_code)
            continue  # the edge would close here; keep feeding to probe more states
        assert all(isinstance(event, EVENTS) for event in events)
    assert all(1000 <= code < 5000 for code in codes)
    assert all(isinstance(event, StreamStopped) for event in stream.connection_closed())


@FUZZ
@given(opening=st.booleans(), messages=inputs("twilio"))
def test_fuzz_twilio(opening: bool, messages: list[str | bytes]) -> None:
    check_stream("twilio", opening, messages)


@FUZZ
@given(opening=st.booleans(), messages=inputs("plivo"))
def test_fuzz_plivo(opening: bool, messages: list[str | bytes]) -> None:
    check_stream("plivo", opening, messages)


@FUZZ
@given(opening=st.booleans(), messages=inputs("vonage"))
def test_fuzz_vonage(opening: bool, messages: list[str | bytes]) -> None:
    check_stream("vonage", opening, messages)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    carrier=st.sampled_from(["twilio", "plivo", "vonage"]),
    messages=st.lists(
        st.one_of(json_values.map(json.dumps), st.text(max_size=30), st.binary(max_size=700)),
        min_size=5,
        max_size=5,
    ),
)
def test_fuzz_carrier_role(carrier: str, messages: list[str | bytes]) -> None:
    side = get(carrier).simulate_carrier("c", {})
    side.open()
    for message in messages:
        try:
            replies = side.receive(message)
        except CarrierProtocolError:
            continue
        assert all(isinstance(reply, str | bytes) for reply in replies)
