"""The call engine's view of one call's agent leg: :class:`AgentLink`.

Every agent, wherever it runs, sits behind this one interface: the WebSocket clients of
:mod:`gateway.bridge.picows_link` (the default) and :mod:`gateway.bridge.websocket`
(aiohttp, the fallback) for agents at a ``ws://``/``wss://`` URL, and the in-process
link of :mod:`gateway.bridge.builtin` for the built-in agents (``echo``). The engine
drives it from its per-call task group::

    await link.open(start)              # connect, authenticate, send start
    link.set_audio_sink(pacer.push)     # optional: agent audio straight to the engine
    link.send_audio(pcm)                # caller audio, from the carrier reader task
    link.send(SpeechStarted(at_ms=...)) # control messages, from any task
    async for item in link:             # the agent reader task: bytes or a message
        ...
    await link.close(Stop(reason="caller_hangup"))

Only ``open``, ``receive`` and ``close`` wait; everything else is a plain call.

Contract
--------
* ``receive()`` returns agent audio (``bytes``: PCM16 LE at ``start.agent_audio``'s rate,
  whole samples, any length) or a decoded :data:`~gateway.bridge.protocol.AgentMessage`.
  It returns ``None`` at the *normal* end of the stream: after :meth:`AgentLink.close`,
  or when the agent closes after it sent ``hangup``. Iterating the link stops there.
  One task reads at a time.
* **Audio sink.** While a sink is set (:meth:`AgentLink.set_audio_sink`), agent audio
  frames, validated exactly as ``receive()`` would return them, are passed to
  ``sink(pcm)`` synchronously as soon as they are read, instead of being returned by
  ``receive()``: no task wake-up per frame. *Except* when control messages read earlier
  are still waiting to be returned by ``receive()``: then the audio queues behind them
  and ``receive()`` returns it, in order. So the order of audio and control messages is
  never changed (the engine places a ``mark`` after the audio before it), and control
  messages always go through ``receive()``. The aiohttp link reads only inside
  ``receive()``, so there the sink is called from within a pending ``receive()``; the
  engine keeps one pending anyway. The sink must not raise: an exception from it is the
  engine's bug. Met while a WebSocket link reads, it fails the link (closed with 1011)
  and ``receive()`` raises it; when the sink runs inside the engine's own call (the
  built-in link's ``send_audio``/``send``, any link's ``resume_reading``), it
  propagates from that call.
* **Back-pressure.** ``pause_reading()`` stops reading from the agent until
  ``resume_reading()`` (both idempotent). While paused, nothing is delivered: the sink is
  not called and ``receive()`` waits (it still returns ``None`` at once after
  ``close``); what was read before the pause took effect is held and delivered, in
  order, after resume. How each link stops reading: the picows link pauses the TCP
  transport (the agent's writes then fill the TCP window); the aiohttp link stops
  taking messages from aiohttp's buffer, which pauses the transport once it holds
  512 KiB; the built-in link holds the core's output. A pause longer than the
  heartbeat's period also holds the pong, and fails the link.
* A failing agent (unreachable, refused, timed out, closed the socket before ``stop``
  without ``hangup``, broke the protocol fatally) raises :class:`~gateway.errors.AgentError`
  with a stable ``reason`` (:class:`LinkFailure` or
  :class:`~gateway.bridge.protocol.ProtocolViolation`), from ``open()`` or from
  ``receive()``, exactly once, after the items read before it. The engine ends the call
  with ``agent_error``. After a failure, ``send_audio`` and ``send`` are silent no-ops,
  so the carrier reader never has to handle the same failure twice; ``close`` still
  cleans up.
* ``send_audio`` never waits on the agent. Caller audio the socket cannot take now goes
  into a bounded queue (:class:`OutgoingQueue`); when the agent reads slower than real
  time, the *oldest* queued audio is dropped and counted (``stats().dropped_frames``):
  the newest audio is what the caller is saying now, and the memory per call stays
  bounded.
* Control messages take a priority lane ahead of queued audio (a ``barge_in`` must not
  wait behind a second of backlog). ``close`` flushes the queued audio first (bounded
  by a timeout), then sends ``stop``, so a caller hanging up mid-sentence loses nothing.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.bridge.protocol import AgentMessage, GatewayMessage, Start, Stop
from gateway.errors import AgentError

__all__ = [
    "DEFAULT_MAX_QUEUED_FRAMES",
    "AgentItem",
    "AgentLink",
    "AudioSink",
    "LinkFailure",
    "LinkStats",
    "OutgoingQueue",
    "check_sendable",
    "not_open",
]

DEFAULT_MAX_QUEUED_FRAMES: Final = 100
"""Caller audio frames a link holds for a slow agent: 2 s of 20 ms frames (64 KB at
16 kHz). Beyond that the oldest is dropped."""

AgentItem = bytes | AgentMessage
"""What an agent sends: PCM16 audio at ``start.agent_audio``'s rate, or a control message."""
AudioSink = Callable[[bytes], None]
"""Takes agent audio frames as they are read (see :meth:`AgentLink.set_audio_sink`)."""


class LinkFailure(StrEnum):
    """Why an agent link failed (the ``reason`` of its :class:`~gateway.errors.AgentError`).

    Protocol violations use :class:`~gateway.bridge.protocol.ProtocolViolation` codes
    (``unauthorized``, ``too_large``, ``unsupported``, ``malformed``) instead.
    """

    UNREACHABLE = "unreachable"
    """No connection: DNS failure, connection refused, TLS failure."""
    TIMEOUT = "timeout"
    """No complete handshake within the connect timeout."""
    REFUSED = "refused"
    """The agent answered the handshake with an HTTP status other than 101 or 401/403."""
    CLOSED = "agent_closed"
    """The agent closed the socket (or the connection broke) before ``stop``."""
    UNKNOWN_BUILTIN = "unknown_builtin"
    """The agent's pipeline names a built-in agent that does not exist."""


@dataclass(frozen=True, slots=True)
class LinkStats:
    """Counters of one agent link, for the call record and metrics."""

    sent_frames: int = 0
    """Caller audio frames handed to the agent."""
    dropped_frames: int = 0
    """Caller audio frames dropped because the agent read slower than real time."""
    queued_frames: int = 0
    """Caller audio frames waiting to be sent now."""
    received_frames: int = 0
    """Agent audio frames received (valid ones)."""
    received_messages: int = 0
    """Agent control messages received and passed on (valid, known types)."""
    unknown_messages: int = 0
    """Agent messages of a type this protocol version does not know, skipped."""
    invalid_messages: int = 0
    """Agent messages refused and skipped (malformed JSON/fields, bad audio frames)."""


class OutgoingQueue:
    """The gateway → agent queue: a priority lane for control, a bounded one for audio.

    Pure bookkeeping with no I/O and no clock; the link's writer pops from it.

    Args:
        max_audio: audio frames held at most (>= 1); the oldest is dropped beyond that.

    Raises:
        ValueError: ``max_audio`` is below 1.
    """

    def __init__(self, max_audio: int = DEFAULT_MAX_QUEUED_FRAMES) -> None:
        if max_audio < 1:
            raise ValueError(f"expected max_audio >= 1, got {max_audio}")
        self._audio: deque[bytes] = deque(maxlen=max_audio)
        self._control: deque[str] = deque()
        self.dropped = 0
        """Audio frames dropped so far."""

    def __len__(self) -> int:
        return len(self._audio) + len(self._control)

    @property
    def audio_frames(self) -> int:
        """Audio frames queued now."""
        return len(self._audio)

    @property
    def control_messages(self) -> int:
        """Control messages queued now."""
        return len(self._control)

    def put_audio(self, frame: bytes) -> None:
        """Queue one audio frame, dropping (and counting) the oldest when full."""
        if len(self._audio) == self._audio.maxlen:
            self.dropped += 1  # deque(maxlen) discards from the left: the oldest
        self._audio.append(frame)

    def put_control(self, text: str) -> None:
        """Queue one encoded control message, ahead of all queued audio."""
        self._control.append(text)

    def pop(self) -> bytes | str | None:
        """The next item to send: control first, then audio; ``None`` when empty."""
        if self._control:
            return self._control.popleft()
        if self._audio:
            return self._audio.popleft()
        return None

    def clear(self) -> None:
        """Forget everything queued (the link failed; nobody will read it)."""
        self._audio.clear()
        self._control.clear()


class AgentLink(abc.ABC):
    """One call's connection to its agent; see the module docstring for the contract."""

    _audio_sink: AudioSink | None = None

    @abc.abstractmethod
    async def open(self, start: Start) -> None:
        """Connect to the agent and send ``start`` (always the first message).

        Raises:
            AgentError: the agent is unreachable, refused us, timed out or is unknown.
                ``reason`` is a :class:`LinkFailure` or ``"unauthorized"``.
        """

    @abc.abstractmethod
    def send_audio(self, pcm: bytes) -> None:
        """Send caller audio (PCM16 LE at ``start.caller_audio``'s rate, typically 20 ms).

        Never waits for the agent; what the socket cannot take now is queued, and the
        oldest queued frame is dropped when the queue is full.

        Raises:
            AgentError: ``reason="not_open"``, the link was never opened.
        """

    def audio_sender(self) -> Callable[[bytes], None]:
        """What to call, once :meth:`open` has returned, in place of :meth:`send_audio`.

        The same behaviour for an open link; an implementation may return a callable
        that skips the "was it ever opened" check, which the per-frame path would make
        50 times a second for nothing.
        """
        return self.send_audio

    @abc.abstractmethod
    def send(self, message: GatewayMessage) -> None:
        """Send a control message ahead of queued audio (not ``start`` or ``stop``).

        Raises:
            TypeError: ``message`` is a :class:`Start` or :class:`Stop` (use open/close).
            AgentError: ``reason="not_open"``, the link was never opened.
        """

    @abc.abstractmethod
    async def receive(self) -> AgentItem | None:
        """The agent's next audio chunk or control message; ``None`` at the normal end.

        Raises:
            AgentError: the agent failed (see the module docstring).
        """

    @abc.abstractmethod
    async def close(self, stop: Stop | None = None) -> None:
        """Flush queued caller audio, send ``stop`` (if given and still possible), close.

        Idempotent: later calls return at once. Never raises for a dead agent.
        """

    @abc.abstractmethod
    def stats(self) -> LinkStats:
        """The link's counters now."""

    def set_audio_sink(self, sink: AudioSink | None) -> None:
        """Pass agent audio to ``sink`` as it is read, not through :meth:`receive`.

        See the module docstring for the ordering rule. ``None`` sends audio through
        :meth:`receive` again (from the next frame read).
        """
        self._audio_sink = sink

    @abc.abstractmethod
    def pause_reading(self) -> None:
        """Stop reading from the agent until :meth:`resume_reading` (idempotent)."""

    @abc.abstractmethod
    def resume_reading(self) -> None:
        """Deliver what was held during the pause, then read again (idempotent)."""

    def __aiter__(self) -> AsyncIterator[AgentItem]:
        """Iterate :meth:`receive` until it returns ``None``."""
        return self._items()

    async def _items(self) -> AsyncIterator[AgentItem]:
        while (item := await self.receive()) is not None:
            yield item


def check_sendable(message: GatewayMessage) -> None:
    """Refuse messages that only ``open``/``close`` may send.

    Raises:
        TypeError: ``message`` is a :class:`Start` or :class:`Stop`.
    """
    if isinstance(message, Start | Stop):
        raise TypeError(f"{type(message).__name__} is sent by open()/close(), not send()")


def not_open() -> AgentError:
    """The error for using a link before :meth:`AgentLink.open`."""
    return AgentError("the agent link is not open", reason="not_open")
