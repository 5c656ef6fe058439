"""What an agent said, on its way to the engine: :class:`Inbox`.

The picows link reads in the event loop's callbacks, and the built-in link in whichever
task feeds its core: neither reads inside ``receive()``. Both hand each item to an Inbox,
which applies the delivery rules of the :class:`~gateway.bridge.link.AgentLink` contract:

* audio goes to the sink while nothing waits before it, synchronously; everything else
  waits in order for ``receive()``, so audio never overtakes a control message;
* while paused, nothing is delivered (the items are held, in order);
* the agent's end, normal or failed, comes after the items read before it.

No I/O and no clock; ``get`` waits on a future only when there is nothing to return.
"""

from __future__ import annotations

import asyncio
from collections import deque

from gateway.bridge.link import AgentItem, AudioSink
from gateway.bridge.protocol import AgentMessage

__all__ = ["Inbox"]


class Inbox:
    """One call's agent items between the link that reads them and the engine."""

    def __init__(self) -> None:
        self._items: deque[AgentItem] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._closed = False  # by us: get() returns None at once, held items are dropped
        self._finished = False  # the agent ended normally: None once the items are out
        self._failure: BaseException | None = None

    @property
    def paused(self) -> bool:
        """Whether delivery is paused."""
        return self._paused

    @property
    def ended(self) -> bool:
        """Whether the stream has ended (closed, finished or failed): nothing more comes."""
        return self._closed or self._finished or self._failure is not None

    # -- from the link -----------------------------------------------------------------------

    def put_audio(self, pcm: bytes, sink: AudioSink | None) -> None:
        """An agent audio frame: to ``sink`` now if nothing waits before it, else queued.

        Raises:
            Exception: whatever ``sink`` raises (the engine's bug), unchanged.
        """
        if sink is not None and not self._items and not self._paused:
            sink(pcm)
        else:
            self._items.append(pcm)
            if not self._paused:
                self._wake()

    def put_message(self, message: AgentMessage) -> None:
        """An agent control message, for ``get``."""
        self._items.append(message)
        if not self._paused:
            self._wake()

    def finish(self) -> None:
        """The agent ended normally: ``get`` returns ``None`` once the items are out."""
        if not self.ended:
            self._finished = True
            self._wake()

    def fail(self, failure: BaseException) -> None:
        """The agent failed: ``get`` raises ``failure`` once the items are out, then once."""
        if not self.ended:
            self._failure = failure
            self._wake()

    def close(self) -> None:
        """We closed the link: ``get`` returns ``None`` now and forever, paused or not."""
        self._closed = True
        self._failure = None
        self._items.clear()
        self._wake()

    def pause(self) -> None:
        """Hold everything until :meth:`resume`."""
        self._paused = True

    def resume(self, sink: AudioSink | None) -> None:
        """Deliver what was held: the audio at the head to ``sink``, the rest to ``get``.

        Raises:
            Exception: whatever ``sink`` raises (the engine's bug), unchanged.
        """
        if not self._paused:
            return
        self._paused = False
        items = self._items
        while sink is not None and items and not self._paused:
            head = items[0]
            if not isinstance(head, bytes):
                break
            items.popleft()
            sink(head)  # may pause again: the loop then stops
        self._wake()

    # -- from the engine ---------------------------------------------------------------------

    async def get(self) -> AgentItem | None:
        """The next item; ``None`` at the end; the failure, once.

        Raises:
            BaseException: the failure given to :meth:`fail`, once.
            RuntimeError: another task is already waiting here.
        """
        while True:
            if self._closed:
                return None
            if not self._paused:
                if self._items:
                    return self._items.popleft()
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    self._closed = True
                    raise failure
                if self._finished:
                    return None
            if self._waiter is not None:
                raise RuntimeError("another task is already receiving from this agent link")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
