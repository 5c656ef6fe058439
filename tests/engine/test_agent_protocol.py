"""The agent protocol: golden messages (shared with the docs), strict decoding, auth."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bridge.protocol import (
    MAX_AUDIO_BYTES,
    MAX_TEXT_BYTES,
    PROTOCOL,
    AgentMessage,
    AudioSpec,
    BargeIn,
    Clear,
    Dtmf,
    DurationWarning,
    Error,
    GatewayMessage,
    Hangup,
    Mark,
    MarkCleared,
    MarkPlayed,
    ProtocolViolation,
    SpeechEnded,
    SpeechStarted,
    Start,
    Stop,
    Transcript,
    UnknownMessage,
    check_audio_frame,
    decode_agent_message,
    decode_gateway_message,
    encode_message,
    issue_agent_token,
    verify_agent_token,
)
from gateway.errors import AgentError, ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "agent-protocol.md"

START_JSON = """{
  "type": "start",
  "protocol": "rymi-agent/1",
  "call_id": "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
  "tenant_id": "0b7e9a52-1c2d-4e3f-9a8b-7c6d5e4f3a2b",
  "agent_id": "a3c9e1f0-5b2d-4c7e-8f6a-1d2e3f4a5b6c",
  "from": "+14155550100",
  "to": "+14155550199",
  "carrier": "twilio",
  "carrier_call_id": "CA5f2b9c0e1d4a3b6c7d8e9f0a1b2c3d4e",
  "direction": "inbound",
  "max_duration_s": 600,
  "caller_audio": {"encoding": "pcm16le", "sample_rate": 16000, "channels": 1},
  "agent_audio": {"encoding": "pcm16le", "sample_rate": 24000, "channels": 1},
  "parameters": {"campaign": "spring"}
}"""
START = Start(
    call_id="6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
    tenant_id="0b7e9a52-1c2d-4e3f-9a8b-7c6d5e4f3a2b",
    agent_id="a3c9e1f0-5b2d-4c7e-8f6a-1d2e3f4a5b6c",
    from_="+14155550100",
    to="+14155550199",
    carrier="twilio",
    carrier_call_id="CA5f2b9c0e1d4a3b6c7d8e9f0a1b2c3d4e",
    direction="inbound",
    max_duration_s=600,
    caller_audio=AudioSpec(sample_rate=16000),
    agent_audio=AudioSpec(sample_rate=24000),
    parameters={"campaign": "spring"},
)

# (JSON exactly as in docs/agent-protocol.md, the message it means)
GATEWAY_GOLDEN: list[tuple[str, GatewayMessage]] = [
    (START_JSON, START),
    (
        '{"type":"mark_played","name":"utt-1","heard_ms":2380,"position_ms":2380}',
        MarkPlayed(name="utt-1", heard_ms=2380, position_ms=2380),
    ),
    (
        '{"type":"mark_cleared","name":"utt-2","heard_ms":1140,"position_ms":3520}',
        MarkCleared(name="utt-2", heard_ms=1140, position_ms=3520),
    ),
    (
        '{"type":"barge_in","heard_ms":5120,"discarded_ms":1860}',
        BargeIn(heard_ms=5120, discarded_ms=1860),
    ),
    ('{"type":"speech_started","at_ms":41220}', SpeechStarted(at_ms=41220)),
    ('{"type":"speech_ended","at_ms":43780}', SpeechEnded(at_ms=43780)),
    ('{"type":"dtmf","digits":"5","duration_ms":260}', Dtmf(digits="5", duration_ms=260)),
    ('{"type":"duration_warning","seconds_left":30}', DurationWarning(seconds_left=30)),
    ('{"type":"stop","reason":"caller_hangup"}', Stop(reason="caller_hangup")),
    (
        '{"type":"error","code":"dtmf_unsupported",'
        '"message":"vonage media streams cannot send DTMF"}',
        Error(code="dtmf_unsupported", message="vonage media streams cannot send DTMF"),
    ),
]
AGENT_GOLDEN: list[tuple[str, AgentMessage]] = [
    ('{"type":"clear"}', Clear()),
    ('{"type":"mark","name":"utt-1"}', Mark(name="utt-1")),
    (
        '{"type":"hangup","reason":"caller asked to end the call"}',
        Hangup(reason="caller asked to end the call"),
    ),
    ('{"type":"dtmf","digits":"1234#"}', Dtmf(digits="1234#")),
    (
        '{"type":"transcript","role":"caller",'
        '"text":"I\'d like to move my appointment to Friday."}',
        Transcript(role="caller", text="I'd like to move my appointment to Friday."),
    ),
    (
        '{"type":"transcript","role":"agent","text":"Sure, Friday at ten works. Shall I book it?"}',
        Transcript(role="agent", text="Sure, Friday at ten works. Shall I book it?"),
    ),
]
ALL_TYPES = {
    "start", "stop", "mark_played", "mark_cleared", "duration_warning", "speech_started",
    "speech_ended", "barge_in", "dtmf", "error", "clear", "mark", "hangup", "transcript",
}  # fmt: skip


def doc_blocks(language: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def violation(data: str | bytes, *, agent: bool = True) -> str:
    decode = decode_agent_message if agent else decode_gateway_message
    with pytest.raises(AgentError) as info:
        decode(data)
    return info.value.reason


class TestGoldenMessages:
    @pytest.mark.parametrize(("text", "message"), GATEWAY_GOLDEN)
    def test_gateway_messages(self, text: str, message: GatewayMessage) -> None:
        assert text in DOC.read_text(encoding="utf-8")
        assert decode_gateway_message(text) == message
        assert json.loads(encode_message(message)) == json.loads(text)

    @pytest.mark.parametrize(("text", "message"), AGENT_GOLDEN)
    def test_agent_messages(self, text: str, message: AgentMessage) -> None:
        assert text in DOC.read_text(encoding="utf-8")
        assert decode_agent_message(text) == message
        assert json.loads(encode_message(message)) == json.loads(text)

    def test_compact_messages_encode_byte_for_byte(self) -> None:
        for text, message in GATEWAY_GOLDEN[1:] + AGENT_GOLDEN:
            assert encode_message(message) == text

    def test_every_json_block_in_the_doc_is_a_known_message(self) -> None:
        seen: set[str] = set()
        blocks = doc_blocks("json")
        assert len(blocks) >= len(GATEWAY_GOLDEN) + len(AGENT_GOLDEN) - 1  # dtmf/error shared
        for block in blocks:
            kind = json.loads(block)["type"]
            decoded = [decode_gateway_message(block), decode_agent_message(block)]
            assert any(not isinstance(m, UnknownMessage) for m in decoded), kind
            seen.add(kind)
        assert seen == ALL_TYPES

    def test_the_doc_extension_example_is_skipped(self) -> None:
        (block,) = doc_blocks("jsonc")
        assert decode_agent_message(block) == UnknownMessage("set_voice_activity")

    def test_start_always_carries_protocol_and_formats(self) -> None:
        minimal = Start(
            call_id="c", tenant_id="t", agent_id="a", from_="+1", to="+2",
            carrier="plivo", direction="outbound", max_duration_s=30,
        )  # fmt: skip
        data = json.loads(encode_message(minimal))
        assert data["protocol"] == PROTOCOL
        assert data["caller_audio"] == data["agent_audio"] == {
            "encoding": "pcm16le", "sample_rate": 16000, "channels": 1,
        }  # fmt: skip
        assert decode_gateway_message(encode_message(minimal)) == minimal

    @pytest.mark.parametrize(
        "message",
        [Hangup(), Dtmf(digits="*"), Error(code="x"), Clear(), Stop(reason="drain")],
    )
    def test_defaults_round_trip(self, message: AgentMessage | GatewayMessage) -> None:
        text = encode_message(message)
        assert message in (decode_agent_message(text), decode_gateway_message(text))


class TestDecodingErrors:
    @pytest.mark.parametrize(
        "data",
        ["", "not json", "[]", "42", "null", '{"type": 7}', '{"no_type": 1}', b"\xff\xfe"],
    )
    def test_not_a_message(self, data: str | bytes) -> None:
        assert violation(data) == ProtocolViolation.MALFORMED

    @pytest.mark.parametrize(
        "data",
        [
            '{"type":"mark"}',
            '{"type":"mark","name":""}',
            '{"type":"mark","name":"' + "n" * 129 + '"}',
            '{"type":"dtmf","digits":"12x"}',
            '{"type":"dtmf","digits":""}',
            '{"type":"dtmf","digits":"1","duration_ms":0}',
            '{"type":"transcript","role":"narrator","text":"hi"}',
            '{"type":"transcript","role":"agent","text":""}',
            '{"type":"hangup","reason":7}',
            '{"type":"error","code":"Bad Code"}',
        ],
    )
    def test_bad_agent_fields(self, data: str) -> None:
        assert violation(data) == ProtocolViolation.MALFORMED

    @pytest.mark.parametrize(
        "change",
        [
            {"max_duration_s": 29},
            {"max_duration_s": 7201},
            {"direction": "sideways"},
            {"carrier": "Twilio"},
            {"call_id": ""},
            {"agent_audio": {"encoding": "pcm16le", "sample_rate": 8000, "channels": 1}},
            {"caller_audio": {"encoding": "mulaw", "sample_rate": 16000, "channels": 1}},
            {"caller_audio": {"encoding": "pcm16le", "sample_rate": 16000, "channels": 2}},
            {"caller_audio": {"encoding": "pcm16le", "sample_rate": 16000, "bits": 16}},
        ],
    )
    def test_bad_start_fields(self, change: dict[str, object]) -> None:
        data = json.loads(START_JSON) | change
        assert violation(json.dumps(data), agent=False) == ProtocolViolation.MALFORMED

    def test_oversized_text(self) -> None:
        text = '{"type":"transcript","role":"agent","text":"' + "a" * MAX_TEXT_BYTES + '"}'
        assert violation(text) == ProtocolViolation.TOO_LARGE
        assert violation(text.encode()) == ProtocolViolation.TOO_LARGE

    def test_error_message_does_not_echo_the_payload(self) -> None:
        with pytest.raises(AgentError) as info:
            decode_agent_message('{"type":"transcript","role":"agent","text":"' + "q" * 9000 + '"}')
        assert "qqqq" not in str(info.value)


class TestForwardCompatibility:
    def test_unknown_fields_are_ignored(self) -> None:
        assert decode_agent_message('{"type":"mark","name":"a","v2_field":[1,2]}') == Mark(name="a")

    def test_unknown_type_is_skipped(self) -> None:
        assert decode_agent_message('{"type":"set_voice","voice":"x"}') == UnknownMessage(
            "set_voice"
        )
        # A gateway-only type from an agent is not one the gateway accepts from agents.
        assert decode_agent_message('{"type":"stop","reason":"x"}') == UnknownMessage("stop")

    def test_unknown_required_type_is_refused(self) -> None:
        data = '{"type":"set_voice","required":true}'
        assert violation(data) == ProtocolViolation.UNSUPPORTED
        assert violation(data, agent=False) == ProtocolViolation.UNSUPPORTED

    def test_known_type_with_required_flag_is_just_the_message(self) -> None:
        assert decode_agent_message('{"type":"clear","required":true}') == Clear()


class TestAudioFrames:
    @pytest.mark.parametrize("size", [2, 640, 960, MAX_AUDIO_BYTES])
    def test_whole_samples_pass(self, size: int) -> None:
        frame = bytes(size)
        assert check_audio_frame(frame) is frame

    @pytest.mark.parametrize(
        ("size", "reason"),
        [
            (0, ProtocolViolation.INVALID_AUDIO),
            (1, ProtocolViolation.INVALID_AUDIO),
            (641, ProtocolViolation.INVALID_AUDIO),
            (MAX_AUDIO_BYTES + 2, ProtocolViolation.TOO_LARGE),
        ],
    )
    def test_bad_frames(self, size: int, reason: ProtocolViolation) -> None:
        with pytest.raises(AgentError) as info:
            check_audio_frame(b"\x01" * size)
        assert info.value.reason == reason

    def test_custom_limit(self) -> None:
        with pytest.raises(AgentError):
            check_audio_frame(bytes(642), max_bytes=640)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)


class TestFuzz:
    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=300) | st.binary(max_size=300))
    def test_random_input_only_raises_agent_error(self, data: str | bytes) -> None:
        for decode in (decode_agent_message, decode_gateway_message):
            reason: str | None = None
            try:
                decode(data)
            except AgentError as exc:
                reason = exc.reason
            assert reason is None or reason in set(ProtocolViolation)

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(sorted(ALL_TYPES)), st.dictionaries(st.text(max_size=12), JSON_VALUES))
    def test_random_fields_on_known_types(self, kind: str, fields: dict[str, object]) -> None:
        text = json.dumps(fields | {"type": kind})
        for decode in (decode_agent_message, decode_gateway_message):
            reason: str | None
            try:
                message = decode(text)
            except AgentError as exc:
                reason = exc.reason
            else:
                reason = None
                if not isinstance(message, UnknownMessage):
                    assert decode(encode_message(message)) == message
            assert reason in {None, ProtocolViolation.MALFORMED}


SECRET = b"s" * 32
AGENT = "a3c9e1f0-5b2d-4c7e-8f6a-1d2e3f4a5b6c"
NOW = 1_700_000_000.0


class TestAgentToken:
    def test_round_trip(self) -> None:
        token = issue_agent_token(SECRET, agent_id=AGENT, call_id="call-1", now=NOW)
        claims = verify_agent_token(token, SECRET, agent_id=AGENT, now=NOW + 30)
        assert (claims.agent_id, claims.call_id, claims.expires_at) == (AGENT, "call-1", NOW + 60)
        assert claims.token_id

    def test_plain_pyjwt_accepts_it_as_the_doc_shows(self) -> None:
        token = issue_agent_token(SECRET, agent_id=AGENT, call_id="call-1", now=time.time())
        claims = jwt.decode(
            token, SECRET, algorithms=["HS256"], audience=AGENT, issuer="rymi-gateway",
            leeway=5, options={"require": ["exp", "sub"]},
        )  # fmt: skip
        assert claims["sub"] == "call-1"

    @pytest.mark.parametrize(
        ("secret", "agent", "now"),
        [
            (b"t" * 32, AGENT, NOW),  # wrong secret
            (SECRET, "another-agent", NOW),  # wrong audience
            (SECRET, AGENT, NOW + 65),  # expired (60 s + 5 s leeway)
            (SECRET, AGENT, NOW - 6),  # not yet valid
        ],
    )
    def test_rejections(self, secret: bytes, agent: str, now: float) -> None:
        token = issue_agent_token(SECRET, agent_id=AGENT, call_id="call-1", now=NOW)
        with pytest.raises(AgentError) as info:
            verify_agent_token(token, secret, agent_id=agent, now=now)
        assert info.value.reason == ProtocolViolation.UNAUTHORIZED

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "a.b.c",
            jwt.encode({"sub": "x"}, "", algorithm="none"),
            jwt.encode(
                {"iss": "rymi-gateway", "aud": AGENT, "sub": "c", "iat": 1, "exp": 2**40},
                SECRET + b"-longer-key-for-hs512-signing-x" * 2,
                algorithm="HS512",
            ),
            jwt.encode(
                {"iss": "someone", "aud": AGENT, "sub": "c", "jti": "j", "iat": NOW, "exp": NOW},
                SECRET,
                algorithm="HS256",
            ),
        ],
    )
    def test_forged_tokens(self, token: str) -> None:
        with pytest.raises(AgentError) as info:
            verify_agent_token(token, SECRET, agent_id=AGENT, now=NOW)
        assert info.value.reason == ProtocolViolation.UNAUTHORIZED

    def test_short_secret_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError):
            issue_agent_token(b"short", agent_id=AGENT, call_id="c", now=NOW)
