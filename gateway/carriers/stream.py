"""Machinery shared by the media stream parsers: decoding, ordering, mark bookkeeping.

Per-frame messages are decoded with msgspec into typed Structs (a tagged union on the
``event`` field, base64 payloads decoded in C). When the union does not match, a tiny
envelope decode tells an *unknown* event (ignored: carriers add events over time) from a
*known* event with a bad shape (an error). Every failure becomes one
:class:`~gateway.errors.CarrierProtocolError` with a close-code hint:

* 1007 INVALID_PAYLOAD: not JSON, not UTF-8, wrong types, missing fields, bad base64,
  wrong audio frame size;
* 1003 UNSUPPORTED_DATA: a binary frame where the carrier only sends text (or the reverse);
* 1009 MESSAGE_TOO_BIG: longer than the stream's limit;
* 1002 PROTOCOL_ERROR: events out of order (media before start, anything after stop).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, TypeVar

import msgspec

from gateway.carriers.base import DEFAULT_MAX_MESSAGE_BYTES, MediaStream, WireMessage
from gateway.carriers.events import Event, MarkPlayed, PlaybackCleared, StreamStopped
from gateway.errors import CloseCode, CommandError

__all__ = ["CLEAR_MARK_PREFIX", "JsonMediaStream", "MarkBook", "State"]

T = TypeVar("T")

CLEAR_MARK_PREFIX = "rymi-clear-"
"""Mark names the adapters reserve for themselves (Twilio clear acknowledgement)."""

_MAX_MARK_NAME = 256  # ours, to keep control messages small; carriers state no limit


class _Envelope(msgspec.Struct):
    event: str


_ENVELOPE = msgspec.json.Decoder(_Envelope)


class State(enum.Enum):
    """Where a media stream is in its life."""

    NEW = "new"
    CONNECTED = "connected"
    STARTED = "started"
    STOPPED = "stopped"


class MarkBook:
    """Marks we sent and clears we sent, to report acks with one meaning on every carrier."""

    __slots__ = ("_clears", "_pending")

    def __init__(self) -> None:
        self._pending: dict[str, None] = {}  # ordered set
        self._clears: deque[tuple[str, ...]] = deque()

    def add(self, name: str) -> None:
        """Record a mark being sent; names must be unique among pending marks."""
        if not name or len(name) > _MAX_MARK_NAME:
            raise CommandError(f"mark name must be 1-{_MAX_MARK_NAME} characters")
        if name.startswith(CLEAR_MARK_PREFIX):
            raise CommandError(f"mark names starting {CLEAR_MARK_PREFIX!r} are reserved")
        if name in self._pending:
            raise CommandError("a mark of that name is already pending")
        self._pending[name] = None

    def played(self, name: str) -> list[Event]:
        """The carrier acknowledged ``name``: an event only if it is still pending."""
        if self._pending.pop(name, 0) is None:
            return [MarkPlayed(name)]
        return []  # cancelled by a clear (Twilio echoes those) or never ours

    def clear(self) -> int:
        """Record a clear being sent; returns its ordinal (for the Twilio sentinel)."""
        self._clears.append(tuple(self._pending))
        self._pending.clear()
        return len(self._clears)

    def cleared(self) -> list[Event]:
        """The carrier acknowledged the oldest outstanding clear."""
        if not self._clears:
            return []
        return [PlaybackCleared(self._clears.popleft())]


class JsonMediaStream(MediaStream):
    """A stream whose carrier sends JSON text frames with an ``event`` field."""

    known_events: frozenset[str] = frozenset()

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.state = State.NEW
        self.marks = MarkBook()

    def decode_text(self, decoder: msgspec.json.Decoder[T], message: WireMessage) -> T | None:
        """Decode a text frame; None means an unknown event to ignore."""
        if not isinstance(message, str):
            self.fail(
                "binary frame where a JSON text frame was expected", CloseCode.UNSUPPORTED_DATA
            )
        self.check_size(message)
        try:
            return decoder.decode(message)
        except msgspec.ValidationError as exc:
            problem = str(exc)
        except (msgspec.DecodeError, UnicodeError):
            self.fail("message is not valid JSON text", CloseCode.INVALID_PAYLOAD)
        self._check_unknown(message, problem)
        return None

    def _check_unknown(self, message: str, problem: str) -> None:
        try:
            event = _ENVELOPE.decode(message).event
        except msgspec.DecodeError:
            self.fail("expected a JSON object with a string 'event'", CloseCode.INVALID_PAYLOAD)
        if event in self.known_events:
            self.fail(f"bad {event!r} message: {problem[:200]}", CloseCode.INVALID_PAYLOAD)
        if self.state is State.STOPPED:
            self.fail(f"{event[:40]!r} message after the stream stopped")

    def expect(self, state: State, event: str) -> None:
        """Fail with PROTOCOL_ERROR unless the stream is in ``state``."""
        if self.state is not state:
            self.fail(f"{event!r} message while the stream is {self.state.value}")

    def stopped(self, reason: str) -> list[Event]:
        """Move to STOPPED and report it."""
        self.state = State.STOPPED
        return [StreamStopped(reason)]

    def connection_closed(self) -> list[Event]:
        """See :meth:`MediaStream.connection_closed`."""
        if self.state is State.STOPPED:
            return []
        return self.stopped("closed")

    def require_started(self) -> None:
        """Commands go out only on a started, not stopped, stream."""
        if self.state is not State.STARTED:
            raise CommandError(f"cannot send on a {self.state.value} stream")


def check_frames(payload: bytes, frame_bytes: int, *, exact: bool = False) -> None:
    """Check outbound audio is whole 20 ms frames (exactly one if ``exact``)."""
    size = len(payload)
    if exact and size != frame_bytes:
        raise CommandError(f"audio must be exactly one 20 ms frame of {frame_bytes} bytes")
    if size == 0 or size % frame_bytes:
        raise CommandError(f"audio must be whole 20 ms frames of {frame_bytes} bytes")


def json_text(value: Any) -> str:
    """Compact JSON text for a control message."""
    return msgspec.json.encode(value).decode("utf-8")
