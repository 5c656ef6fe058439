"""What the two WebSocket links share: settings, open errors, strict reading, counters.

:class:`~gateway.bridge.picows_link.PicowsLink` (the default) and
:class:`~gateway.bridge.websocket.WebSocketLink` (aiohttp, the fallback) speak the same
protocol by the same rules; the rules live here, without I/O, so the two cannot drift:

* :class:`WebSocketSettings`, the tunables of both;
* the :class:`~gateway.errors.AgentError` of each way an open fails
  (:func:`handshake_refused`, :func:`connect_timed_out`, :func:`unreachable`) and of an
  agent that leaves early (:func:`closed_early`);
* :class:`AgentReader`, strict reading (docs/agent-protocol.md §6): malformed JSON or
  fields and bad audio frames are answered with ``error`` and skipped, unknown types
  are counted and skipped, a text frame over 16 KiB (1009) and an unknown ``required``
  message (1008) are fatal (RFC 6455 §7.4.1); and the counters of
  :class:`~gateway.bridge.link.LinkStats`;
* for a library that hands over raw frames (picows), what aiohttp does itself:
  :class:`MessageAssembler` (fragmented messages, RFC 6455 §5.4) and :func:`decode_text`
  (UTF-8, §8.1). Each fatal case raises :class:`FatalViolation`, which names its close
  code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.bridge.link import (
    DEFAULT_MAX_QUEUED_FRAMES,
    LinkFailure,
    LinkStats,
    OutgoingQueue,
)
from gateway.bridge.protocol import (
    MAX_AUDIO_BYTES,
    AgentMessage,
    Error,
    Hangup,
    ProtocolViolation,
    UnknownMessage,
    check_audio_frame,
    decode_agent_message,
    encode_message,
)
from gateway.errors import AgentError, CloseCode

__all__ = [
    "FAILURE_BY_CLOSE_CODE",
    "MAX_PENDING_REPLIES",
    "AgentReader",
    "FatalViolation",
    "MessageAssembler",
    "WebSocketSettings",
    "closed_early",
    "connect_timed_out",
    "decode_text",
    "handshake_refused",
    "unreachable",
]

log = logging.getLogger("gateway.bridge")

_FATAL_CLOSE: Final = {
    ProtocolViolation.TOO_LARGE: CloseCode.MESSAGE_TOO_BIG,  # 1009
    ProtocolViolation.UNSUPPORTED: CloseCode.POLICY_VIOLATION,  # 1008
}  # the close code that goes with each fatal violation of a text message (RFC 6455 §7.4.1)
FAILURE_BY_CLOSE_CODE: Final[dict[int, str]] = {
    CloseCode.MESSAGE_TOO_BIG: ProtocolViolation.TOO_LARGE,  # a frame over the size cap
    CloseCode.INVALID_PAYLOAD: ProtocolViolation.MALFORMED,  # e.g. invalid UTF-8 text
    CloseCode.PROTOCOL_ERROR: ProtocolViolation.MALFORMED,  # RFC 6455 framing broken
}
"""What the close code means when the WebSocket library failed the connection for us."""
MAX_PENDING_REPLIES: Final = 32
"""Replies to bad agent messages wait behind at most this many control messages; beyond
that an agent that floods us while not reading gets no more replies (still counted)."""


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """Tunables of the agent WebSocket clients (seconds, frames, bytes)."""

    connect_timeout_s: float = 5.0
    """Connect + TLS + handshake + sending ``start`` (docs/agent-protocol.md §6: 5 s)."""
    heartbeat_s: float | None = 15.0
    """Ping period; no pong within half of it fails the link. ``None``: no pings."""
    flush_timeout_s: float = 2.0
    """How long ``close`` waits for queued caller audio to reach the agent."""
    close_timeout_s: float = 2.0
    """How long ``close`` waits for the agent's closing handshake before aborting."""
    max_queued_frames: int = DEFAULT_MAX_QUEUED_FRAMES
    """Caller audio frames held for a slow agent before the oldest is dropped."""
    max_message_bytes: int = 2 * MAX_AUDIO_BYTES
    """Largest message read at all; beyond it the connection fails with 1009. Up to it,
    a binary frame over the protocol's 64 KiB is refused (``error``) and dropped (§6)."""


class FatalViolation(AgentError):
    """An agent's message that fails the connection with ``close_code`` (RFC 6455 §7.1.7).

    Args:
        message: what was wrong, never the payload.
        reason: a :class:`~gateway.bridge.protocol.ProtocolViolation`.
        close_code: the close code to send (RFC 6455 §7.4.1).
    """

    def __init__(self, message: str, *, reason: str, close_code: int) -> None:
        super().__init__(message, reason=reason)
        self.close_code = close_code


# -- why an open failed, or the agent left ------------------------------------------------


def handshake_refused(where: str, status: int | None) -> AgentError:
    """The agent answered the upgrade with HTTP ``status`` (None: not even valid HTTP)."""
    if status in (401, 403):  # RFC 6750 §3.1: invalid_token
        return AgentError(
            f"{where} refused our token (HTTP {status})", reason=ProtocolViolation.UNAUTHORIZED
        )
    answer = f"HTTP {status}" if status not in (None, 101) else "an invalid upgrade response"
    return AgentError(
        f"{where} refused the WebSocket handshake ({answer})", reason=LinkFailure.REFUSED
    )


def connect_timed_out(where: str, timeout_s: float) -> AgentError:
    """No complete handshake (and ``start`` sent) within the connect timeout."""
    return AgentError(f"{where} did not answer within {timeout_s} s", reason=LinkFailure.TIMEOUT)


def unreachable(where: str, exc: BaseException) -> AgentError:
    """No connection: DNS, TCP or TLS failed, or the agent hung up mid-handshake."""
    return AgentError(
        f"{where} is unreachable ({type(exc).__name__})", reason=LinkFailure.UNREACHABLE
    )


def closed_early(code: int | None, reason: str = LinkFailure.CLOSED) -> AgentError:
    """The connection ended before ``stop`` and without ``hangup``, with close ``code``."""
    log.warning("agent connection ended before stop (%s, close code %s)", reason, code)
    return AgentError(f"the agent closed the connection before stop (code {code})", reason=reason)


# -- reading -------------------------------------------------------------------------------


class AgentReader:
    """Strict reading of an agent's messages (docs/agent-protocol.md §6), and the counters.

    Args:
        reply: sends one encoded ``error`` reply to a bad but survivable message, if the
            link still can (it is counted either way).
    """

    __slots__ = ("_reply", "frames", "hung_up", "invalid", "messages", "unknown")

    def __init__(self, reply: Callable[[str], None]) -> None:
        self._reply = reply
        self.frames = 0
        self.messages = 0
        self.unknown = 0
        self.invalid = 0
        self.hung_up = False
        """Whether the agent has sent ``hangup``: its closing is then a normal end."""

    def audio(self, data: bytes) -> bytes | None:
        """A binary message: the audio frame, or None when refused (and answered)."""
        size = len(data)
        if size and not size & 1 and size <= MAX_AUDIO_BYTES:  # the usual case, inline
            self.frames += 1
            return data
        try:
            check_audio_frame(data)
        except AgentError as exc:
            self._refuse(exc)
        return None

    def text(self, data: str) -> AgentMessage | None:
        """A text message: the message, or None to skip it.

        Raises:
            FatalViolation: too large (1009), or an unknown ``required`` type (1008).
        """
        try:
            message = decode_agent_message(data)
        except AgentError as exc:
            code = _FATAL_CLOSE.get(ProtocolViolation(exc.reason))
            if code is not None:
                raise FatalViolation(str(exc), reason=exc.reason, close_code=code) from None
            self._refuse(exc)
            return None
        if isinstance(message, UnknownMessage):
            self.unknown += 1
            log.debug("skipped agent message of unknown type %r", message.type)
            return None
        self.messages += 1
        if isinstance(message, Hangup):
            self.hung_up = True
        return message

    def stats(self, queue: OutgoingQueue, sent: int) -> LinkStats:
        """The link's counters, with the outgoing ``queue``'s and the ``sent`` frames."""
        return LinkStats(
            sent_frames=sent,
            dropped_frames=queue.dropped,
            queued_frames=queue.audio_frames,
            received_frames=self.frames,
            received_messages=self.messages,
            unknown_messages=self.unknown,
            invalid_messages=self.invalid,
        )

    def _refuse(self, exc: AgentError) -> None:
        """Answer a bad but survivable message with ``error`` (docs §6) and skip it."""
        self.invalid += 1
        log.debug("refused an agent message: %s", exc.reason)
        self._reply(encode_message(Error(code=exc.reason, message=str(exc))))


# -- frames into messages, for picows ------------------------------------------------------

_CONTINUATION, _TEXT, _BINARY = 0x0, 0x1, 0x2  # data frame opcodes, RFC 6455 §5.2


def decode_text(data: bytes) -> str:
    """A text message's payload as text.

    Raises:
        FatalViolation: not UTF-8 (RFC 6455 §8.1: fail the connection with 1007).
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FatalViolation(
            "invalid UTF-8 in a text message",
            reason=ProtocolViolation.MALFORMED,
            close_code=CloseCode.INVALID_PAYLOAD,
        ) from None


class MessageAssembler:
    """Whole messages from the frames of fragmented ones (RFC 6455 §5.4).

    Args:
        max_bytes: largest message; beyond it the connection fails with 1009.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._parts: list[bytes] | None = None
        self._opcode = _BINARY
        self._size = 0
        self.active = False
        """Whether a fragmented message is being read (its next frame must continue it)."""

    def feed(self, opcode: int, fin: bool, payload: bytes) -> tuple[int, bytes] | None:
        """One data frame; the message's opcode (text 1, binary 2) and payload once whole.

        Raises:
            FatalViolation: a continuation with no message to continue, or a new message
                inside a fragmented one (1002); a message over ``max_bytes`` (1009).
        """
        if opcode == _CONTINUATION:
            if self._parts is None:
                raise _framing("a continuation frame with no message to continue")
        elif self._parts is not None:
            raise _framing("a new message inside a fragmented one")
        else:
            self._parts, self._opcode, self._size = [], opcode, 0
            self.active = True
        self._parts.append(payload)
        self._size += len(payload)
        if self._size > self._max_bytes:
            self._parts, self.active = None, False
            raise FatalViolation(
                f"a fragmented message of over {self._max_bytes} bytes",
                reason=ProtocolViolation.TOO_LARGE,
                close_code=CloseCode.MESSAGE_TOO_BIG,
            )
        if not fin:
            return None
        data, self._parts, self.active = b"".join(self._parts), None, False
        return self._opcode, data


def _framing(what: str) -> FatalViolation:
    return FatalViolation(
        f"the agent sent {what}",
        reason=ProtocolViolation.MALFORMED,
        close_code=CloseCode.PROTOCOL_ERROR,
    )
