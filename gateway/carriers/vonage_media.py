"""Vonage Voice WebSocket, both roles (carrier-protocols.md sections 3.4, 3.5).

Vonage -> us: first a text ``websocket:connected`` whose ``content-type`` gives the
rate (``audio/l16;rate=16000``) and whose other fields are our NCCO ``headers``,
flattened; then **binary** frames of 16-bit little-endian PCM, exactly 20 ms each
(320 B at 8 kHz, 640 B at 16 kHz, 960 B at 24 kHz), with text events in between:
``websocket:dtmf``, ``websocket:cleared``, ``websocket:notify``. There is **no stop
event**: the socket closing ends the stream (:meth:`VonageStream.connection_closed`).

Us -> Vonage: binary frames of exactly 20 ms (Vonage drops the socket on any other size,
vocode issue #727), ``{"action":"clear"}`` (answered by ``websocket:cleared``) and
``{"action":"notify","payload":{...}}`` (answered by ``websocket:notify`` with the same
payload once the audio before it has played). No DTMF can be sent on the socket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.carriers.base import DEFAULT_MAX_MESSAGE_BYTES, CarrierSide, WireMessage
from gateway.carriers.events import (
    AudioReceived,
    ClearPlayback,
    Command,
    DtmfReceived,
    Event,
    Mark,
    PlayAudio,
    StreamStarted,
)
from gateway.carriers.playback import Playback
from gateway.carriers.stream import JsonMediaStream, State, check_frames, json_text
from gateway.carriers.twilio_media import DTMF_DIGITS
from gateway.errors import CarrierProtocolError, CloseCode, CommandError
from rymi_codecs import L16_8K, L16_16K, L16_24K

__all__ = ["CONTENT_TYPES", "VonageCarrierSide", "VonageStream"]

CONTENT_TYPES = {
    "audio/l16;rate=8000": L16_8K,
    "audio/l16;rate=16000": L16_16K,
    "audio/l16;rate=24000": L16_24K,
}
"""Websocket endpoint ``content-type`` values and their formats (3.2)."""

_MARK_KEY = "rymi_mark"  # our key inside notify payloads


class _Connected(msgspec.Struct, tag_field="event", tag="websocket:connected"):
    content_type: str = msgspec.field(name="content-type")


class _DtmfNested(msgspec.Struct, kw_only=True):
    digit: str
    duration: int | None = None


class _Dtmf(msgspec.Struct, tag_field="event", tag="websocket:dtmf", kw_only=True):
    # pipecat also sees {"dtmf": {"digit": ...}}: accept both shapes (3.4).
    digit: str | None = None
    duration: int | None = None
    dtmf: _DtmfNested | None = None


class _Cleared(msgspec.Struct, tag_field="event", tag="websocket:cleared"):
    pass


class _Notify(msgspec.Struct, tag_field="event", tag="websocket:notify"):
    payload: Any = None


_DECODER = msgspec.json.Decoder(_Connected | _Dtmf | _Cleared | _Notify, strict=False)
_FIELDS = msgspec.json.Decoder(dict[str, Any])


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json_text(value)


class VonageStream(JsonMediaStream):
    """Vonage media socket in the gateway's role."""

    carrier = "vonage"
    known_events = frozenset(
        {"websocket:connected", "websocket:dtmf", "websocket:cleared", "websocket:notify"}
    )

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.audio_format = L16_16K
        self._frame = L16_16K.bytes_per_frame()

    def receive(self, message: WireMessage) -> list[Event]:
        """See :meth:`MediaStream.receive`."""
        if isinstance(message, bytes):
            if self.state is not State.STARTED:
                self.fail(f"binary audio while the stream is {self.state.value}")
            if len(message) != self._frame:
                self.fail(
                    f"audio frame of {len(message)} bytes; expected exactly {self._frame} (20 ms)",
                    CloseCode.INVALID_PAYLOAD,
                )
            return [AudioReceived(message, self.audio_format)]
        return self._control(message)

    def receive_media(self, message: WireMessage) -> bytes | list[Event]:
        """See :meth:`MediaStream.receive_media`: a binary frame is the audio itself."""
        if type(message) is bytes and self.state is State.STARTED and len(message) == self._frame:
            return message
        return self.receive(message)  # text, or a binary frame receive() refuses

    def _control(self, message: str) -> list[Event]:
        """A text message: the stream's state machine."""
        msg = self.decode_text(_DECODER, message)
        if msg is None:
            return []
        if isinstance(msg, _Connected):
            return self._connected(msg, message)
        self.expect(State.STARTED, msg.__struct_config__.tag)
        if isinstance(msg, _Dtmf):
            return [self._dtmf(msg)]
        if isinstance(msg, _Cleared):
            return self.marks.cleared()
        if isinstance(msg.payload, dict) and isinstance(msg.payload.get(_MARK_KEY), str):
            return self.marks.played(msg.payload[_MARK_KEY])
        return []  # a notify that is not one of our marks

    def _connected(self, msg: _Connected, raw: str) -> list[Event]:
        self.expect(State.NEW, "websocket:connected")
        fmt = CONTENT_TYPES.get(msg.content_type.replace(" ", "").lower())
        if fmt is None:
            self.fail(
                "content-type is not audio/l16 at 8000/16000/24000 Hz", CloseCode.INVALID_PAYLOAD
            )
        fields = _FIELDS.decode(raw)  # the same text decoded once more: our headers, flattened
        params = {k: _text(v) for k, v in fields.items() if k not in ("event", "content-type")}
        self.state = State.STARTED
        self.audio_format = fmt
        self._frame = fmt.bytes_per_frame()
        call_id = params.get("call_uuid", "")
        return [
            StreamStarted(stream_id="", call_id=call_id, audio_format=fmt, custom_parameters=params)
        ]

    def _dtmf(self, msg: _Dtmf) -> DtmfReceived:
        digit, duration = msg.digit, msg.duration
        if msg.dtmf is not None:
            digit, duration = msg.dtmf.digit, msg.dtmf.duration
        if digit is None or digit not in DTMF_DIGITS:
            self.fail("websocket:dtmf digit must be one of 0-9 * # A-D", CloseCode.INVALID_PAYLOAD)
        return DtmfReceived(digit, duration)

    def audio_message(self, frame: bytes) -> WireMessage:
        """See :meth:`MediaStream.audio_message`: the frame itself, as a binary message."""
        if self.state is State.STARTED and len(frame) == self._frame:
            return frame
        return super().audio_message(frame)  # raises what send() raises

    def send(self, command: Command) -> list[WireMessage]:
        """See :meth:`MediaStream.send`; audio goes out one 20 ms frame per message."""
        self.require_started()
        if isinstance(command, PlayAudio):
            payload, frame = command.payload, self._frame
            if len(payload) == frame:
                return [payload]
            check_frames(payload, frame)
            return [payload[i : i + frame] for i in range(0, len(payload), frame)]
        if isinstance(command, Mark):
            self.marks.add(command.name)
            return [json_text({"action": "notify", "payload": {_MARK_KEY: command.name}})]
        if isinstance(command, ClearPlayback):
            self.marks.clear()
            return ['{"action":"clear"}']
        raise CommandError("Vonage websockets cannot send DTMF; use the REST API")


class _OutAction(msgspec.Struct):
    action: str
    payload: Any = None


_OUT_DECODER = msgspec.json.Decoder(_OutAction)


class VonageCarrierSide(CarrierSide):
    """Vonage's side of the media socket (tests, load tester).

    Args:
        headers: the NCCO endpoint ``headers``, flattened into ``websocket:connected``.
        rate: 8000, 16000 or 24000 Hz.
    """

    def __init__(self, headers: Mapping[str, str], *, rate: int = 16000) -> None:
        self.content_type = f"audio/l16;rate={rate}"
        self.audio_format = CONTENT_TYPES[self.content_type]
        self.frame = self.audio_format.bytes_per_frame()
        self.headers = dict(headers)
        self.playback: Playback[Any] = Playback(self.audio_format.bytes_per_second // 1000)

    def open(self) -> list[WireMessage]:
        """``websocket:connected`` with the headers flattened in."""
        return [
            json_text(
                {"event": "websocket:connected", "content-type": self.content_type} | self.headers
            )
        ]

    def audio(self, payload: bytes) -> WireMessage:
        """One binary frame (must be exactly 20 ms)."""
        if len(payload) != self.frame:
            raise CommandError(f"Vonage frames are exactly {self.frame} bytes")
        return payload

    def dtmf(self, digit: str) -> WireMessage:
        """A ``websocket:dtmf`` event."""
        return json_text({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    def stop(self) -> list[WireMessage]:
        """Nothing: Vonage just closes the socket (3.4)."""
        return []

    def receive(self, message: WireMessage) -> list[WireMessage]:
        """Queue 20 ms frames and notifies; ``clear`` drops the queue, answers ``cleared``."""
        if isinstance(message, bytes):
            if len(message) != self.frame:
                # Vonage logs "unexpected frame size" and drops the socket (3.5).
                raise CarrierProtocolError(
                    "vonage",
                    f"frame of {len(message)} bytes, not {self.frame}",
                    CloseCode.INVALID_PAYLOAD,
                )
            self.playback.add_audio(message)
            return []
        try:
            msg = _OUT_DECODER.decode(message)
        except (msgspec.DecodeError, UnicodeError):
            raise CarrierProtocolError(
                "vonage", "invalid action message", CloseCode.INVALID_PAYLOAD
            ) from None
        if msg.action == "notify":
            return [self._notify(p) for p in self.playback.add_marker(msg.payload)]
        if msg.action == "clear":
            # Whether pending notifies fire after a clear is undocumented; we drop them.
            self.playback.clear()
            return [json_text({"event": "websocket:cleared"})]
        raise CarrierProtocolError("vonage", "unknown action", CloseCode.INVALID_PAYLOAD)

    def _notify(self, payload: Any) -> str:
        return json_text({"event": "websocket:notify", "payload": payload})

    def advance(self, ms: int) -> list[WireMessage]:
        """See :meth:`CarrierSide.advance`."""
        return [self._notify(p) for p in self.playback.advance(ms)]

    def take_played(self) -> bytes:
        """See :meth:`CarrierSide.take_played`."""
        return self.playback.take_played()
