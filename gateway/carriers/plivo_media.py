"""Plivo Audio Streaming WebSocket, both roles (carrier-protocols.md sections 2.4, 2.5).

Plivo -> us, JSON text: ``start`` (callId, streamId, accountId, mediaFormat; our
``extraHeaders`` arrive as the string ``extra_headers``), ``media`` (base64; μ-law 8k or
L16 little-endian 8k/16k; ``timestamp`` is Unix epoch ms, unlike Twilio), ``dtmf``,
``playedStream`` (older name ``played``) for our checkpoints, ``clearedAudio``, and a
``stop`` that only some sources list: socket close is the authoritative end (2.4).
Us -> Plivo: ``playAudio`` (contentType and sampleRate must match the stream),
``checkpoint``, ``clearAudio``, ``sendDTMF``.

Clear: unlike Twilio's marks, checkpoints pending at ``clearAudio`` are **never**
acknowledged (``playedStream`` fires only for audio that played, 2.5). Plivo does
acknowledge the clear itself (``clearedAudio``), which becomes
:class:`PlaybackCleared` naming the checkpoints that were pending.
"""

from __future__ import annotations

import base64
from binascii import b2a_base64
from collections.abc import Mapping

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
from rymi_codecs import L16_8K, L16_16K, MULAW_8K, AudioFormat

__all__ = ["CONTENT_TYPES", "PlivoCarrierSide", "PlivoStream", "parse_extra_headers"]

CONTENT_TYPES = {
    "audio/x-mulaw;rate=8000": MULAW_8K,
    "audio/x-l16;rate=8000": L16_8K,
    "audio/x-l16;rate=16000": L16_16K,
}
"""``<Stream contentType>`` values and the format each streams (2.2)."""

_MAX_MESSAGE = 65_536  # Plivo's largest WS message (2.5)


def _format(encoding: str, rate: int) -> AudioFormat | None:
    mime, _, param = encoding.partition(";")
    if param.startswith("rate="):
        rate = int(param[5:]) if param[5:].isdigit() else -1
    return CONTENT_TYPES.get(f"{mime.strip()};rate={rate}")


def _wire_name(fmt: AudioFormat) -> str:
    return "audio/x-mulaw" if fmt == MULAW_8K else "audio/x-l16"


def parse_extra_headers(raw: str) -> dict[str, str]:
    """``extra_headers`` as a dict: ``k=v`` pairs split on ``;`` or ``,``, or a JSON object.

    Plivo's pages disagree on the separator and one Plivo clone sent ``"{}"`` (2.2), so
    this is tolerant: anything that is not a pair is skipped.
    """
    raw = raw.strip()
    if raw.startswith("{"):
        try:
            obj = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeError):
            obj = None
        if isinstance(obj, dict):
            return {str(k): v if isinstance(v, str) else json_text(v) for k, v in obj.items()}
    pairs = (item.partition("=") for item in raw.replace(";", ",").split(","))
    return {k.strip(): v.strip() for k, sep, v in pairs if sep and k.strip()}


class _MediaFormat(msgspec.Struct, kw_only=True):
    encoding: str
    sampleRate: int = 8000


class _StartBody(msgspec.Struct, kw_only=True):
    callId: str
    streamId: str
    accountId: str | None = None
    mediaFormat: _MediaFormat


class _MediaBody(msgspec.Struct, kw_only=True):
    payload: bytes
    track: str = "inbound"
    timestamp: int | None = None


class _DtmfBody(msgspec.Struct, kw_only=True):
    digit: str


class _Start(msgspec.Struct, tag_field="event", tag="start", kw_only=True):
    start: _StartBody
    extra_headers: str = ""


class _Media(msgspec.Struct, tag_field="event", tag="media", kw_only=True):
    media: _MediaBody
    streamId: str | None = None
    sequenceNumber: int | None = None


class _Dtmf(msgspec.Struct, tag_field="event", tag="dtmf", kw_only=True):
    dtmf: _DtmfBody
    streamId: str | None = None


class _Played(msgspec.Struct, tag_field="event", tag="playedStream", kw_only=True):
    name: str
    streamId: str | None = None


class _PlayedOld(msgspec.Struct, tag_field="event", tag="played", kw_only=True):
    name: str  # one older support article names the ack "played" (2.5)
    streamId: str | None = None


class _Cleared(msgspec.Struct, tag_field="event", tag="clearedAudio", kw_only=True):
    streamId: str | None = None


class _Stop(msgspec.Struct, tag_field="event", tag="stop", kw_only=True):
    streamId: str | None = None


_Message = _Start | _Media | _Dtmf | _Played | _PlayedOld | _Cleared | _Stop
_DECODER = msgspec.json.Decoder(_Message, strict=False)


class PlivoStream(JsonMediaStream):
    """Plivo media socket in the gateway's role."""

    carrier = "plivo"
    known_events = frozenset(
        {"start", "media", "dtmf", "playedStream", "played", "clearedAudio", "stop"}
    )

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.stream_id = ""
        self.audio_format = MULAW_8K
        self._play_prefix = ""
        self._frame = MULAW_8K.bytes_per_frame()

    def receive(self, message: WireMessage) -> list[Event]:
        """See :meth:`MediaStream.receive`."""
        msg = self.decode_text(_DECODER, message)
        if isinstance(msg, _Media):
            self._check_id(msg.streamId, "media")
            if msg.media.track != "inbound":
                return []
            fmt = self.audio_format
            if len(msg.media.payload) % fmt.bytes_per_sample:
                self.fail("media payload is not whole samples", CloseCode.INVALID_PAYLOAD)
            return [AudioReceived(msg.media.payload, fmt, msg.media.timestamp, msg.sequenceNumber)]
        return self._control(msg)

    def receive_media(self, message: WireMessage) -> bytes | list[Event]:
        """See :meth:`MediaStream.receive_media`: one decode, the checks inline."""
        if type(message) is str and len(message) <= self.max_message_bytes:
            try:
                msg = _DECODER.decode(message)
            except (msgspec.MsgspecError, UnicodeError):
                msg = self.decode_text(_DECODER, message)  # raises, or None: unknown event
        else:
            msg = self.decode_text(_DECODER, message)  # raises the binary or size error
        if type(msg) is _Media:
            sid, payload = msg.streamId, msg.media.payload
            if self.state is not State.STARTED or (sid is not None and sid != self.stream_id):
                self._check_id(sid, "media")  # raises the right error
            if msg.media.track != "inbound":
                return []
            if len(payload) % self.audio_format.bytes_per_sample:
                self.fail("media payload is not whole samples", CloseCode.INVALID_PAYLOAD)
            return payload
        return self._control(msg)

    def _control(self, msg: _Message | None) -> list[Event]:
        """Every message but ``media``: the stream's state machine."""
        if msg is None:
            return []
        if isinstance(msg, _Start):
            return self._start(msg)
        self._check_id(msg.streamId, str(msg.__struct_config__.tag))
        if isinstance(msg, _Dtmf):
            if msg.dtmf.digit not in DTMF_DIGITS:
                self.fail("dtmf digit must be one of 0-9 * # A-D", CloseCode.INVALID_PAYLOAD)
            return [DtmfReceived(msg.dtmf.digit)]
        if isinstance(msg, _Played | _PlayedOld):
            return self.marks.played(msg.name)
        if isinstance(msg, _Cleared):
            return self.marks.cleared()
        return self.stopped("stop")

    def _start(self, msg: _Start) -> list[Event]:
        self.expect(State.NEW, "start")
        fmt = _format(msg.start.mediaFormat.encoding, msg.start.mediaFormat.sampleRate)
        if fmt is None:
            self.fail("mediaFormat is not a Plivo stream content type", CloseCode.INVALID_PAYLOAD)
        self.state = State.STARTED
        self.stream_id = msg.start.streamId
        self.audio_format = fmt
        self._frame = fmt.bytes_per_frame()
        self._play_prefix = (
            '{"event":"playAudio","media":{"contentType":"'
            f'{_wire_name(fmt)}","sampleRate":{fmt.sample_rate},"payload":"'
        )
        return [
            StreamStarted(
                stream_id=msg.start.streamId,
                call_id=msg.start.callId,
                audio_format=fmt,
                custom_parameters=parse_extra_headers(msg.extra_headers),
                account_id=msg.start.accountId,
            )
        ]

    def _play_audio(self, audio: bytes) -> str:
        """The ``playAudio`` message carrying ``audio`` (whole frames, checked by the caller)."""
        return self._play_prefix + b2a_base64(audio, newline=False).decode("ascii") + '"}}'

    def _check_id(self, stream_id: str | None, event: str) -> None:
        self.expect(State.STARTED, event)
        if stream_id is not None and stream_id != self.stream_id:
            self.fail(f"{event!r} message for another streamId")

    def audio_message(self, frame: bytes) -> WireMessage:
        """See :meth:`MediaStream.audio_message` (a 20 ms frame is far below the size limit)."""
        if self.state is State.STARTED and len(frame) == self._frame:
            return self._play_audio(frame)
        return super().audio_message(frame)  # raises what send() raises

    def send(self, command: Command) -> list[WireMessage]:
        """See :meth:`MediaStream.send`."""
        self.require_started()
        if isinstance(command, PlayAudio):
            check_frames(command.payload, self._frame)
            text = self._play_audio(command.payload)
            if len(text) > _MAX_MESSAGE:
                raise CommandError(f"playAudio message over Plivo's {_MAX_MESSAGE}-byte limit")
            return [text]
        if isinstance(command, Mark):
            self.marks.add(command.name)
            return [
                json_text({"event": "checkpoint", "streamId": self.stream_id, "name": command.name})
            ]
        if isinstance(command, ClearPlayback):
            self.marks.clear()
            return [json_text({"event": "clearAudio", "streamId": self.stream_id})]
        if not command.digits or any(d not in DTMF_DIGITS for d in command.digits):
            raise CommandError("DTMF digits must be one or more of 0-9 * # A-D")
        return [json_text({"event": "sendDTMF", "dtmf": command.digits})]


class _OutMedia(msgspec.Struct, kw_only=True):
    contentType: str
    sampleRate: int
    payload: bytes


class _OutPlay(msgspec.Struct, tag_field="event", tag="playAudio"):
    media: _OutMedia


class _OutCheckpoint(msgspec.Struct, tag_field="event", tag="checkpoint"):
    streamId: str
    name: str


class _OutClear(msgspec.Struct, tag_field="event", tag="clearAudio"):
    streamId: str


class _OutDtmf(msgspec.Struct, tag_field="event", tag="sendDTMF"):
    dtmf: str


_OUT_DECODER = msgspec.json.Decoder(_OutPlay | _OutCheckpoint | _OutClear | _OutDtmf)


class PlivoCarrierSide(CarrierSide):
    """Plivo's side of the media socket (tests, load tester).

    Args:
        call_uuid: the call's ``CallUUID``.
        custom_parameters: what ``extraHeaders`` carried.
        content_type: the stream's ``contentType``.
        start_epoch_ms: the Unix time (ms) media timestamps count from (no clock here).
    """

    def __init__(
        self,
        call_uuid: str,
        custom_parameters: Mapping[str, str],
        *,
        content_type: str = "audio/x-mulaw;rate=8000",
        start_epoch_ms: int = 1_700_000_000_000,
    ) -> None:
        self.call_uuid = call_uuid
        self.stream_id = "st-" + call_uuid
        self.audio_format = CONTENT_TYPES[content_type]
        self.extra_headers = ",".join(f"{k}={v}" for k, v in custom_parameters.items())
        self.playback: Playback[str] = Playback(self.audio_format.bytes_per_second // 1000)
        self.dtmf_played: list[str] = []
        self._seq = 0
        self._ms = start_epoch_ms

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def open(self) -> list[WireMessage]:
        """The ``start`` message (Plivo sends no ``connected``)."""
        fmt = self.audio_format
        start = {
            "callId": self.call_uuid,
            "streamId": self.stream_id,
            "accountId": "MA" + "0" * 18,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": _wire_name(fmt), "sampleRate": fmt.sample_rate},
        }
        msg = {"event": "start", "sequenceNumber": self._next(), "start": start}
        return [json_text(msg | {"extra_headers": self.extra_headers})]

    def audio(self, payload: bytes) -> WireMessage:
        """A ``media`` message; timestamp is Unix epoch ms."""
        seq = self._next()
        media = {
            "track": "inbound",
            "timestamp": str(self._ms),
            "chunk": seq - 1,
            "payload": base64.b64encode(payload).decode(),
        }
        self._ms += len(payload) * 1000 // self.audio_format.bytes_per_second
        return json_text(
            {"event": "media", "sequenceNumber": seq, "streamId": self.stream_id, "media": media}
        )

    def dtmf(self, digit: str) -> WireMessage:
        """A ``dtmf`` message."""
        dtmf = {"track": "inbound", "digit": digit, "timestamp": str(self._ms)}
        return json_text(
            {
                "event": "dtmf",
                "sequenceNumber": self._next(),
                "streamId": self.stream_id,
                "dtmf": dtmf,
            }
        )

    def stop(self) -> list[WireMessage]:
        """A ``stop`` message (not every Plivo source lists it; the socket closes anyway)."""
        return [
            json_text({"event": "stop", "sequenceNumber": self._next(), "streamId": self.stream_id})
        ]

    def _event(self, event: str, **fields: str) -> str:
        return json_text(
            {"event": event, "sequenceNumber": self._next(), "streamId": self.stream_id} | fields
        )

    def receive(self, message: WireMessage) -> list[WireMessage]:
        """Queue audio and checkpoints; ``clearAudio`` drops both and answers ``clearedAudio``."""
        if not isinstance(message, str):
            raise CarrierProtocolError(
                "plivo", "binary frame; Plivo takes JSON text", CloseCode.UNSUPPORTED_DATA
            )
        try:
            msg = _OUT_DECODER.decode(message)
        except (msgspec.DecodeError, UnicodeError) as exc:
            raise CarrierProtocolError(
                "plivo", f"invalid message: {str(exc)[:200]}", CloseCode.INVALID_PAYLOAD
            ) from None
        if isinstance(msg, _OutPlay):
            fmt = self.audio_format
            if (msg.media.contentType, msg.media.sampleRate) != (_wire_name(fmt), fmt.sample_rate):
                raise CarrierProtocolError("plivo", "playAudio format does not match the stream")
            self.playback.add_audio(msg.media.payload)
            return []
        if isinstance(msg, _OutDtmf):
            self.dtmf_played.append(msg.dtmf)
            return []
        if msg.streamId != self.stream_id:
            raise CarrierProtocolError("plivo", "message for another streamId")
        if isinstance(msg, _OutCheckpoint):
            return [self._event("playedStream", name=n) for n in self.playback.add_marker(msg.name)]
        self.playback.clear()  # pending checkpoints are dropped, never acknowledged (2.5)
        return [self._event("clearedAudio")]

    def advance(self, ms: int) -> list[WireMessage]:
        """See :meth:`CarrierSide.advance`."""
        return [self._event("playedStream", name=n) for n in self.playback.advance(ms)]

    def take_played(self) -> bytes:
        """See :meth:`CarrierSide.take_played`."""
        return self.playback.take_played()
