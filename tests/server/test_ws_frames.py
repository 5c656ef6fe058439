"""The carrier socket's RFC 6455 frame parser and builders, on bytes (no I/O).

Client frames here are built by aiohttp's own client-side ``WebSocketWriter`` where it
can build them (masked, fragmented or not), so the parser is checked against another
implementation, not against frames of our own making; hand-built frames are only the
malformed ones no correct writer produces.
"""

from __future__ import annotations

import asyncio
import os
import struct

import pytest
from aiohttp import WSMsgType
from aiohttp.http import WebSocketWriter
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import CarrierProtocolError, CloseCode
from gateway.server._mask import unmask
from gateway.server.ws_frames import (
    MASK_COMPILED,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    Control,
    FrameParser,
    close_frame,
    encode_frame,
    parse_close,
    pong_frame,
    python_unmask,
)

LIMIT = 65_536


class _Sink:
    """A transport stand-in that keeps what aiohttp's writer writes."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.data += chunk

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class _Protocol:
    transport = None
    _paused = False

    def __init__(self) -> None:
        self._drain_waiter = None


def client_frames(*messages: tuple[WSMsgType, bytes]) -> bytes:
    """Masked, unfragmented client frames written by aiohttp's writer."""

    async def write() -> bytes:
        sink = _Sink()
        writer = WebSocketWriter(_Protocol(), sink, use_mask=True, limit=1 << 30)  # type: ignore[arg-type]
        for opcode, payload in messages:
            await writer.send_frame(payload, opcode)
        return bytes(sink.data)

    return asyncio.run(write())


def error_code(parser: FrameParser) -> int | None:
    """The close code of the violation that stopped ``parser``; None while it has not."""
    return None if parser.error is None else parser.error.close_code


def masked(first: int, payload: bytes, *, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A hand-built masked frame: ``first`` is the FIN/RSV/opcode byte."""
    size = len(payload)
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def test_text_and_binary_messages_of_every_length_class() -> None:
    sizes = [0, 1, 125, 126, 127, 65535, 65536]
    messages = []
    for n in sizes:
        messages.append((WSMsgType.TEXT, ("é" * (n // 2) + "a" * (n % 2)).encode()))
        messages.append((WSMsgType.BINARY, os.urandom(n)))
    wire = client_frames(*messages)
    got = FrameParser(1 << 20).feed(wire)
    expected = [p.decode() if op is WSMsgType.TEXT else p for op, p in messages]
    assert got == expected


@given(st.lists(st.binary(max_size=400), min_size=1, max_size=8), st.data())
def test_any_cut_of_the_byte_stream_gives_the_same_messages(
    payloads: list[bytes], data: st.DataObject
) -> None:
    wire = b"".join(masked(0x82, p, mask=os.urandom(4)) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    parser = FrameParser(LIMIT)
    got: list[object] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        got += parser.feed(wire[start:cut])
        start = cut
    assert got == payloads


def test_fragments_are_joined_and_control_frames_may_come_between() -> None:
    wire = (
        masked(0x01, "hé".encode()[:2])  # text, no FIN; "é" split across fragments
        + masked(0x89, b"ping!")  # a ping between fragments (§5.4)
        + masked(0x00, "hé".encode()[2:])  # continuation, no FIN
        + masked(0x80, b" there")  # continuation, FIN
    )
    assert FrameParser(LIMIT).feed(wire) == [Control(OP_PING, b"ping!"), "hé there"]


def test_control_frames_carry_their_payload() -> None:
    wire = masked(0x89, b"a") + masked(0x8A, b"b") + masked(0x88, b"\x03\xe8bye")
    assert FrameParser(LIMIT).feed(wire) == [
        Control(OP_PING, b"a"),
        Control(OP_PONG, b"b"),
        Control(OP_CLOSE, b"\x03\xe8bye"),
    ]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        pytest.param(bytes((0x81, 2)) + b"hi", CloseCode.PROTOCOL_ERROR, id="unmasked"),
        pytest.param(masked(0xC1, b"x"), CloseCode.PROTOCOL_ERROR, id="rsv1-set"),
        pytest.param(masked(0xA1, b"x"), CloseCode.PROTOCOL_ERROR, id="rsv2-set"),
        pytest.param(masked(0x83, b"x"), CloseCode.PROTOCOL_ERROR, id="reserved-data-opcode"),
        pytest.param(masked(0x8B, b"x"), CloseCode.PROTOCOL_ERROR, id="reserved-control-opcode"),
        pytest.param(masked(0x09, b"x"), CloseCode.PROTOCOL_ERROR, id="fragmented-ping"),
        pytest.param(masked(0x89, b"x" * 126), CloseCode.PROTOCOL_ERROR, id="ping-over-125"),
        pytest.param(masked(0x80, b"x"), CloseCode.PROTOCOL_ERROR, id="orphan-continuation"),
        pytest.param(
            masked(0x01, b"a") + masked(0x81, b"b"),
            CloseCode.PROTOCOL_ERROR,
            id="new-in-fragmented",
        ),
        pytest.param(masked(0x81, b"\xff\xfe"), CloseCode.INVALID_PAYLOAD, id="invalid-utf8"),
        pytest.param(
            masked(0x01, b"\xc3") + masked(0x80, b"("),
            CloseCode.INVALID_PAYLOAD,
            id="bad-utf8-joined",
        ),
        pytest.param(
            bytes((0x82, 0xFF)) + (1 << 63).to_bytes(8, "big") + b"mask",
            CloseCode.PROTOCOL_ERROR,
            id="64-bit-top-bit",
        ),
    ],
)
def test_protocol_violations_carry_their_close_code(wire: bytes, code: CloseCode) -> None:
    parser = FrameParser(LIMIT)
    before = masked(0x82, b"fine")
    assert parser.feed(before + wire + before) == [b"fine"]  # what came before the violation
    assert error_code(parser) == code
    assert parser.feed(before) == []  # the stream is no longer trusted to be framed


def test_an_oversized_message_fails_on_its_header_before_the_payload_arrives() -> None:
    header = masked(0x82, b"x" * 70_000)[:14]  # 64-bit length 70 000, mask; no payload yet
    parser = FrameParser(LIMIT)
    assert parser.feed(header) == []
    assert error_code(parser) == CloseCode.MESSAGE_TOO_BIG


def test_the_size_limit_counts_every_fragment_of_a_message() -> None:
    parser = FrameParser(1000)
    assert parser.feed(masked(0x02, b"x" * 600)) == []
    assert error_code(parser) is None
    assert parser.feed(masked(0x80, b"x" * 401)) == []
    assert error_code(parser) == CloseCode.MESSAGE_TOO_BIG


def test_a_message_at_the_limit_is_accepted() -> None:
    assert FrameParser(1000).feed(masked(0x82, b"x" * 1000)) == [b"x" * 1000]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(b"", None), (b"\x03\xe8", 1000), (b"\x0f\xa0why", 4000), (b"\x03\xf3", 1011)],
)
def test_close_codes_a_peer_may_send(payload: bytes, expected: int | None) -> None:
    assert parse_close(payload) == expected


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x03", CloseCode.PROTOCOL_ERROR),  # a 1-byte body
        (b"\x03\xed", CloseCode.PROTOCOL_ERROR),  # 1005: reporting only (§7.4.1)
        (b"\x03\xee", CloseCode.PROTOCOL_ERROR),  # 1006: reporting only
        (b"\x03\xe7", CloseCode.PROTOCOL_ERROR),  # 999
        (b"\x13\x88", CloseCode.PROTOCOL_ERROR),  # 5000
        (b"\x03\xe8\xff", CloseCode.INVALID_PAYLOAD),  # reason not UTF-8
    ],
)
def test_close_frames_a_peer_may_not_send(payload: bytes, code: CloseCode) -> None:
    with pytest.raises(CarrierProtocolError) as raised:
        parse_close(payload)
    assert raised.value.close_code == code


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_frame_header_lengths_follow_rfc6455_section_5_2(size: int) -> None:
    frame = encode_frame(b"x" * size, text=False)
    assert frame[0] == 0x82  # FIN + binary
    if size < 126:
        assert frame[1] == size
        assert len(frame) == 2 + size
    elif size < 65536:
        assert frame[1] == 126
        assert int.from_bytes(frame[2:4], "big") == size
    else:
        assert frame[1] == 127
        assert int.from_bytes(frame[2:10], "big") == size
    assert frame[1] & 0x80 == 0  # a server never masks (§5.1)


def test_close_frame_reason_is_cut_to_125_bytes_on_a_character_boundary() -> None:
    frame = close_frame(1008, "é" * 100)  # 200 bytes of reason
    assert frame[0] == 0x88
    assert frame[1] == len(frame) - 2 <= 125
    assert parse_close(frame[2:]) == 1008  # the reason still decodes
    assert close_frame(None) == b"\x88\x00"


def test_the_compiled_unmask_is_built_and_used() -> None:
    assert MASK_COMPILED, (
        "gateway.server._mask is not built: reinstall with a C compiler and the Python "
        "headers (sudo apt-get install gcc python3-dev; .venv/bin/pip install -e '.[dev]')"
    )


@given(st.binary(max_size=2000), st.binary(min_size=4, max_size=4))
def test_the_compiled_unmask_equals_the_python_xor(payload: bytes, mask: bytes) -> None:
    expected = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert python_unmask(payload, mask) == expected
    assert unmask(payload, mask) == expected
    assert unmask(memoryview(payload), mask) == expected


def test_the_compiled_unmask_refuses_a_mask_that_is_not_4_bytes() -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        unmask(b"abc", b"key")


def test_pong_echoes_the_ping_payload() -> None:
    assert pong_frame(b"abc") == b"\x8a\x03abc"
