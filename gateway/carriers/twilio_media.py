"""Twilio Media Streams WebSocket, both roles (carrier-protocols.md sections 1.4, 1.5).

Twilio -> us, JSON text only: ``connected``, ``start`` (streamSid, callSid, accountSid,
mediaFormat μ-law/8000/1, customParameters), then ``media`` (base64 μ-law, track,
chunk, timestamp = ms since stream start, all counters as strings), ``dtmf``, ``mark``
(echo of ours) and finally ``stop``. Us -> Twilio: ``media``, ``mark``, ``clear``.

Clear: Twilio answers ``clear`` by echoing **every pending mark** (1.5), so an echo
means "played or cleared", and it sends no clear acknowledgement of its own. We
therefore (a) remember which marks were pending when we sent ``clear`` and swallow
their echoes, reporting them as ``PlaybackCleared.cancelled_marks``, and (b) send a
reserved mark right after ``clear``; Twilio echoes it at once (its buffer is empty),
and that echo becomes the :class:`PlaybackCleared` event.

Twilio has no DTMF-sending message on this socket (1.5): :class:`SendDtmf` raises
:class:`~gateway.errors.CommandError`.
"""

from __future__ import annotations

import base64
import hashlib
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
from gateway.carriers.stream import (
    CLEAR_MARK_PREFIX,
    JsonMediaStream,
    State,
    check_frames,
    json_text,
)
from gateway.errors import CarrierProtocolError, CloseCode, CommandError
from rymi_codecs import MULAW_8K

__all__ = ["DTMF_DIGITS", "TwilioCarrierSide", "TwilioStream"]

DTMF_DIGITS = frozenset("0123456789*#ABCD")
_FRAME = MULAW_8K.bytes_per_frame()  # 160 B = 20 ms


class _MediaFormat(msgspec.Struct, kw_only=True):
    encoding: str
    sampleRate: int
    channels: int = 1


class _StartBody(msgspec.Struct, kw_only=True):
    streamSid: str
    callSid: str
    accountSid: str | None = None
    mediaFormat: _MediaFormat
    customParameters: dict[str, str] = msgspec.field(default_factory=dict)


class _MediaBody(msgspec.Struct, kw_only=True):
    payload: bytes  # base64 in JSON, decoded by msgspec in C
    track: str = "inbound"
    chunk: int | None = None
    timestamp: int | None = None


class _Name(msgspec.Struct):
    name: str


class _DtmfBody(msgspec.Struct, kw_only=True):
    digit: str


class _Connected(msgspec.Struct, tag_field="event", tag="connected"):
    pass


class _Start(msgspec.Struct, tag_field="event", tag="start", kw_only=True):
    start: _StartBody
    sequenceNumber: int | None = None


class _Media(msgspec.Struct, tag_field="event", tag="media", kw_only=True):
    media: _MediaBody
    streamSid: str | None = None
    sequenceNumber: int | None = None


class _Dtmf(msgspec.Struct, tag_field="event", tag="dtmf", kw_only=True):
    dtmf: _DtmfBody
    streamSid: str | None = None


class _MarkEcho(msgspec.Struct, tag_field="event", tag="mark", kw_only=True):
    mark: _Name
    streamSid: str | None = None


class _Stop(msgspec.Struct, tag_field="event", tag="stop", kw_only=True):
    streamSid: str | None = None


# strict=False: Twilio sends counters as strings ("sequenceNumber": "4"); accept numbers too.
_Message = _Connected | _Start | _Media | _Dtmf | _MarkEcho | _Stop
_DECODER = msgspec.json.Decoder(_Message, strict=False)


class TwilioStream(JsonMediaStream):
    """Twilio media socket in the gateway's role."""

    carrier = "twilio"
    known_events = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.stream_sid = ""
        self._media_prefix = ""
        self._clears_sent = 0

    def receive(self, message: WireMessage) -> list[Event]:
        """See :meth:`MediaStream.receive`."""
        msg = self.decode_text(_DECODER, message)
        if isinstance(msg, _Media):
            self._check_sid(msg.streamSid, "media")
            if msg.media.track != "inbound":
                return []  # <Connect><Stream> only carries the inbound track
            return [
                AudioReceived(msg.media.payload, MULAW_8K, msg.media.timestamp, msg.sequenceNumber)
            ]
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
            sid = msg.streamSid
            if self.state is not State.STARTED or (sid is not None and sid != self.stream_sid):
                self._check_sid(sid, "media")  # raises the right error
            if msg.media.track != "inbound":
                return []
            return msg.media.payload
        return self._control(msg)

    def _control(self, msg: _Message | None) -> list[Event]:
        """Every message but ``media``: the stream's state machine."""
        if msg is None:
            return []
        if isinstance(msg, _Connected):
            self.expect(State.NEW, "connected")
            self.state = State.CONNECTED
            return []
        if isinstance(msg, _Start):
            return self._start(msg)
        self._check_sid(msg.streamSid, str(msg.__struct_config__.tag))
        if isinstance(msg, _Dtmf):
            if msg.dtmf.digit not in DTMF_DIGITS:
                self.fail("dtmf digit must be one of 0-9 * # A-D", CloseCode.INVALID_PAYLOAD)
            return [DtmfReceived(msg.dtmf.digit)]
        if isinstance(msg, _MarkEcho):
            if msg.mark.name.startswith(CLEAR_MARK_PREFIX):
                return self.marks.cleared()
            return self.marks.played(msg.mark.name)
        return self.stopped("stop")

    def _start(self, msg: _Start) -> list[Event]:
        if self.state not in (State.NEW, State.CONNECTED):
            self.fail(f"'start' message while the stream is {self.state.value}")
        fmt = msg.start.mediaFormat
        if (fmt.encoding, fmt.sampleRate, fmt.channels) != ("audio/x-mulaw", 8000, 1):
            self.fail(
                "mediaFormat must be audio/x-mulaw, 8000 Hz, 1 channel", CloseCode.INVALID_PAYLOAD
            )
        self.state = State.STARTED
        self.stream_sid = msg.start.streamSid
        self._media_prefix = '{"event":"media","streamSid":' + json_text(self.stream_sid)
        self._media_prefix += ',"media":{"payload":"'
        return [
            StreamStarted(
                stream_id=msg.start.streamSid,
                call_id=msg.start.callSid,
                audio_format=MULAW_8K,
                custom_parameters=msg.start.customParameters,
                account_id=msg.start.accountSid,
            )
        ]

    def _check_sid(self, sid: str | None, event: str) -> None:
        self.expect(State.STARTED, event)
        if sid is not None and sid != self.stream_sid:
            self.fail(f"{event!r} message for another streamSid")

    def audio_message(self, frame: bytes) -> WireMessage:
        """See :meth:`MediaStream.audio_message`."""
        if self.state is State.STARTED and len(frame) == _FRAME:  # (_media inline)
            return self._media_prefix + b2a_base64(frame, newline=False).decode("ascii") + '"}}'
        return super().audio_message(frame)  # raises what send() raises

    def send(self, command: Command) -> list[WireMessage]:
        """See :meth:`MediaStream.send`."""
        self.require_started()
        if isinstance(command, PlayAudio):
            check_frames(command.payload, _FRAME)
            return [self._media(command.payload)]
        if isinstance(command, Mark):
            self.marks.add(command.name)
            return [self._mark(command.name)]
        if isinstance(command, ClearPlayback):
            self.marks.clear()
            self._clears_sent += 1
            clear = json_text({"event": "clear", "streamSid": self.stream_sid})
            return [clear, self._mark(f"{CLEAR_MARK_PREFIX}{self._clears_sent}")]
        raise CommandError("Twilio media streams cannot send DTMF; use the REST API or TwiML")

    def _media(self, audio: bytes) -> str:
        """The ``media`` message carrying ``audio`` (whole frames, checked by the caller)."""
        return self._media_prefix + b2a_base64(audio, newline=False).decode("ascii") + '"}}'

    def _mark(self, name: str) -> str:
        return json_text({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})


class _OutMediaBody(msgspec.Struct):
    payload: bytes


class _OutMedia(msgspec.Struct, tag_field="event", tag="media"):
    streamSid: str
    media: _OutMediaBody


class _OutMark(msgspec.Struct, tag_field="event", tag="mark"):
    streamSid: str
    mark: _Name


class _OutClear(msgspec.Struct, tag_field="event", tag="clear"):
    streamSid: str


_OUT_DECODER = msgspec.json.Decoder(_OutMedia | _OutMark | _OutClear)


class TwilioCarrierSide(CarrierSide):
    """Twilio's side of the media socket (tests, load tester).

    Args:
        call_sid: the call's ``CallSid``.
        custom_parameters: what the ``<Parameter>``s carried.
        account_sid: the ``AccountSid`` to report.
    """

    def __init__(
        self,
        call_sid: str,
        custom_parameters: Mapping[str, str],
        account_sid: str = "AC" + "0" * 32,
    ) -> None:
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = "MZ" + hashlib.sha256(call_sid.encode()).hexdigest()[:32]
        self.custom_parameters = dict(custom_parameters)
        self.playback: Playback[str] = Playback(MULAW_8K.bytes_per_second // 1000)
        self._seq = 0
        self._chunk = 0
        self._sent_ms = 0
        self._sid_json = json_text(self.stream_sid)

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    def open(self) -> list[WireMessage]:
        """``connected`` then ``start`` (1.4)."""
        start = {
            "event": "start",
            "sequenceNumber": self._next_seq(),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": self.custom_parameters,
            },
            "streamSid": self.stream_sid,
        }
        return [
            json_text({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            json_text(start),
        ]

    def audio(self, payload: bytes) -> WireMessage:
        """A ``media`` message; timestamp is ms since the stream started."""
        self._chunk += 1
        stamp = self._sent_ms
        self._sent_ms += len(payload) // 8
        return (
            f'{{"event":"media","sequenceNumber":"{self._next_seq()}","media":{{"track":"inbound",'
            f'"chunk":"{self._chunk}","timestamp":"{stamp}","payload":"'
            f'{base64.b64encode(payload).decode("ascii")}"}},"streamSid":{self._sid_json}}}'
        )

    def dtmf(self, digit: str) -> WireMessage:
        """A ``dtmf`` message (track is always ``inbound_track``)."""
        return json_text(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_seq(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def stop(self) -> list[WireMessage]:
        """The ``stop`` message Twilio sends before closing."""
        stop = {"accountSid": self.account_sid, "callSid": self.call_sid}
        return [
            json_text(
                {
                    "event": "stop",
                    "sequenceNumber": self._next_seq(),
                    "stop": stop,
                    "streamSid": self.stream_sid,
                }
            )
        ]

    def _echo(self, names: list[str]) -> list[WireMessage]:
        return [
            json_text(
                {
                    "event": "mark",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.stream_sid,
                    "mark": {"name": n},
                }
            )
            for n in names
        ]

    def receive(self, message: WireMessage) -> list[WireMessage]:
        """Queue audio, echo marks when reached, and on ``clear`` echo every pending mark."""
        if not isinstance(message, str):
            raise CarrierProtocolError(
                "twilio", "binary frame (Twilio warning 31950)", CloseCode.UNSUPPORTED_DATA
            )
        try:
            msg = _OUT_DECODER.decode(message)
        except (msgspec.DecodeError, UnicodeError) as exc:
            # Twilio warning 31951: unknown event, missing/extra field.
            raise CarrierProtocolError(
                "twilio", f"invalid message: {str(exc)[:200]}", CloseCode.INVALID_PAYLOAD
            ) from None
        if msg.streamSid != self.stream_sid:
            raise CarrierProtocolError("twilio", "message for another streamSid (warning 31951)")
        if isinstance(msg, _OutMedia):
            self.playback.add_audio(msg.media.payload)
            return []
        if isinstance(msg, _OutMark):
            return self._echo(self.playback.add_marker(msg.mark.name))
        return self._echo(self.playback.clear())

    def advance(self, ms: int) -> list[WireMessage]:
        """See :meth:`CarrierSide.advance`."""
        return self._echo(self.playback.advance(ms))

    def take_played(self) -> bytes:
        """See :meth:`CarrierSide.take_played`."""
        return self.playback.take_played()
