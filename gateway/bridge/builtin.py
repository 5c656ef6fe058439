"""Built-in agents: sans-I/O agent cores, and the in-process link that runs one per call.

An :class:`AgentCore` is an agent with the I/O taken out: caller audio and gateway
messages go in, agent audio and agent messages come out, synchronously. The same core
runs in two places:

* in the gateway's process, behind :class:`BuiltinLink` (the :class:`AgentLink` of the
  ``echo`` pipeline: no socket, no encoding, no task), and
* in a real agent process, ``loadtest/agent_server.py``, behind a WebSocket.

So a test of one is a test of the other, and the load tester measures the real topology
with exactly the agent behaviour of the demo.

Cores have no clock. An agent needs one to pace its speech, and the caller's audio is
it: the gateway sends exactly 20 ms of caller audio per 20 ms of real time, silence
included (docs/agent-protocol.md §3), so a core counts caller frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from gateway.bridge.inbox import Inbox
from gateway.bridge.link import (
    AgentItem,
    AgentLink,
    LinkStats,
    check_sendable,
    not_open,
)
from gateway.bridge.protocol import GatewayMessage, Start, Stop
from gateway.errors import AgentError

__all__ = ["AgentCore", "BuiltinLink", "CoreFactory", "SinkCore"]

log = logging.getLogger("gateway.bridge")


class AgentCore(Protocol):
    """A sans-I/O agent: one per call, built from the call's ``start``."""

    def receive_audio(self, pcm: bytes) -> list[AgentItem]:
        """Take caller audio (PCM16 at ``start.caller_audio``'s rate, any whole samples).

        Returns:
            What the agent sends now, in order: audio at ``start.agent_audio``'s rate and
            messages.
        """
        ...

    def receive_message(self, message: GatewayMessage) -> list[AgentItem]:
        """Take a gateway message (never ``start``: the core was built from it)."""
        ...


CoreFactory = Callable[[Start], AgentCore]
"""Builds a call's core from its ``start`` (a class such as ``EchoCore`` is one)."""


class SinkCore:
    """The ``silence`` agent: takes everything, says nothing (load tests of one direction)."""

    def __init__(self, start: Start) -> None:
        self.caller_bytes = 0
        """Caller audio received, bytes."""

    def receive_audio(self, pcm: bytes) -> list[AgentItem]:
        """Count the audio; answer nothing."""
        self.caller_bytes += len(pcm)
        return []

    def receive_message(self, message: GatewayMessage) -> list[AgentItem]:
        """Ignore the message."""
        return []


class BuiltinLink(AgentLink):
    """An in-process agent behind the :class:`AgentLink` interface.

    The core runs inline in whichever task calls ``send_audio``/``send`` (its work per
    frame is microseconds); what it answers goes through an
    :class:`~gateway.bridge.inbox.Inbox`: audio to the sink, if one is set, before
    ``send_audio`` returns, the rest to ``receive``. The cores shipped here produce at
    most real time plus a small lead, so the inbox stays small while the engine reads
    it. ``pause_reading`` holds the core's output (the core still runs). A core that
    raises fails the link: the error is reported once, by ``receive``, as
    :class:`~gateway.errors.AgentError`.

    Args:
        factory: builds the call's core from ``start``.
        name: the built-in's name, for logs and reprs.
    """

    def __init__(self, factory: CoreFactory, name: str = "builtin") -> None:
        self._factory = factory
        self._name = name
        self._core: AgentCore | None = None
        self._inbox = Inbox()
        self._closed = False
        self._sent = 0
        self._frames = 0
        self._messages = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._core else "new"
        return f"<BuiltinLink {self._name} {state}>"

    @property
    def core(self) -> AgentCore | None:
        """The call's core once open (for its own statistics), else None."""
        return self._core

    async def open(self, start: Start) -> None:
        """Build the call's core; see :meth:`AgentLink.open`."""
        if self._core is not None or self._closed:
            raise AgentError("the agent link was already opened", reason="misuse")
        self._core = self._factory(start)

    def send_audio(self, pcm: bytes) -> None:
        """Feed caller audio to the core; see :meth:`AgentLink.send_audio`."""
        core = self._live_core()
        if core is not None:
            self._sent += 1
            self._apply(lambda: core.receive_audio(pcm))

    def send(self, message: GatewayMessage) -> None:
        """Feed a control message to the core; see :meth:`AgentLink.send`."""
        check_sendable(message)
        core = self._live_core()
        if core is not None:
            self._apply(lambda: core.receive_message(message))

    async def receive(self) -> AgentItem | None:
        """The core's next output; see :meth:`AgentLink.receive`."""
        if self._core is None and not self._closed:
            raise not_open()
        return await self._inbox.get()

    def pause_reading(self) -> None:
        """Hold the core's output; see :meth:`AgentLink.pause_reading`."""
        self._inbox.pause()

    def resume_reading(self) -> None:
        """Deliver the held output; see :meth:`AgentLink.resume_reading`."""
        self._inbox.resume(self._audio_sink)

    async def close(self, stop: Stop | None = None) -> None:
        """Tell the core the call ended; see :meth:`AgentLink.close`."""
        core = self._live_core()
        self._closed = True
        self._inbox.close()
        if core is not None and stop is not None:
            self._apply(lambda: core.receive_message(stop))  # what it answers is dropped

    def stats(self) -> LinkStats:
        """The link's counters now (nothing is ever dropped in-process)."""
        return LinkStats(
            sent_frames=self._sent,
            received_frames=self._frames,
            received_messages=self._messages,
        )

    def _live_core(self) -> AgentCore | None:
        if self._core is None and not self._closed:
            raise not_open()
        if self._closed or self._inbox.ended:
            return None
        return self._core

    def _apply(self, step: Callable[[], list[AgentItem]]) -> None:
        try:
            outputs = step()
        except Exception as exc:  # a broken core is an agent failure, not the engine's
            log.exception("built-in agent %s failed", self._name)
            failure = AgentError(
                f"built-in agent {self._name} failed: {type(exc).__name__}", reason="agent_error"
            )
            failure.__cause__ = exc
            self._inbox.fail(failure)
            return
        inbox = self._inbox
        for item in outputs:  # a sink that raises is the engine's bug: it propagates
            if inbox.ended:
                return
            if isinstance(item, bytes):
                self._frames += 1
                inbox.put_audio(item, self._audio_sink)
            else:
                self._messages += 1
                inbox.put_message(item)
