"""One live call: a task group bridging the carrier's socket and the agent link.

Two tasks per call (:meth:`CallRunner.run`), one ``asyncio.TaskGroup``, and two
callbacks:

* **carrier messages** (the socket's read callback,
  :class:`~gateway.server.carrier_ws.CarrierConnection`, no task): carrier messages →
  events; caller audio decoded and resampled (:class:`~gateway.media.CallerMedia`) and
  handed to the agent link (which never waits: its queue is bounded and drops the
  oldest, counted); VAD barge-in; DTMF; mark echoes reconciled.
* **agent task**: opens the link, then reads the agent's control messages. Agent audio
  arrives through the link's audio sink, synchronously from the socket's read callback
  (:meth:`~gateway.bridge.link.AgentLink.set_audio_sink`), into exact 20 ms frames in
  the pacer (:class:`~gateway.media.AgentMedia`). While more than :data:`HIGH_WATER_MS`
  is queued the link stops reading (``pause_reading``), so TCP slows a fast agent down.
* **paced writer** (a ``loop.call_at`` callback, not a task): releases frames on the
  monotonic clock (``loop.time()``), sends the marks behind them, tells the agent which
  marks were heard, and re-arms itself for the pacer's next deadline. It writes each
  frame synchronously (:meth:`~gateway.server.carrier_ws.CarrierConnection.send`): no
  coroutine, lock or task switch per frame (docs/performance.md, "Load").
* **timer** (task): the session's deadlines (start, warning, max duration, checkpoints,
  grace) and events posted from outside (commands, lease loss, drain). Checkpoints go to
  the engine's :class:`~gateway.server.checkpoints.CheckpointBatcher`: one database
  write per second for all calls, not one per call.

Every decision goes through the pure :class:`~gateway.session.CallSession`. When it
returns :class:`~gateway.call_events.EndCall`, the group is cancelled and the ending
sequence runs shielded from cancellation, each step on its own so one failure cannot
skip the next (reliability.md 5.4): flush caller audio to the agent, ``stop`` and close
the agent, carrier REST hang-up when the caller is still there, close the carrier
socket, finalize the call record once, release the lease.

Metrics go through the call's :class:`~gateway.server.meter.CallMeter` (plain counters on
the per-frame path, flushed once a second; sampled timings); log lines carry the call
and tenant ids because the media handler runs the call inside ``bind_call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.bridge import protocol as proto
from gateway.bridge.link import AgentLink
from gateway.call_events import (
    AgentConnected,
    AgentFailed,
    AgentHungUp,
    AudioExchanged,
    CallerHungUp,
    CarrierFailed,
    Checkpoint,
    EndCall,
    EndReason,
    Event,
    HangupRequested,
    PlayoutIdle,
    Tick,
    WarnAgent,
)
from gateway.carriers import (
    AudioReceived,
    CarrierAdapter,
    Command,
    DtmfReceived,
    MarkPlayed,
    MediaStream,
    SendDtmf,
    StreamStarted,
    StreamStopped,
)
from gateway.errors import AgentError, CarrierProtocolError, CloseCode, CommandError
from gateway.media import AgentMedia, CallerMedia, Outputs
from gateway.metrics import DropReason
from gateway.server.answer import agent_start
from gateway.server.carrier_ws import CarrierConnection
from gateway.server.context import Engine
from gateway.server.finish import finish_call
from gateway.server.limits import Keepalive
from gateway.server.meter import CallMeter
from gateway.session import CallSession, Phase
from gateway.store.coordination import Lease
from gateway.store.models import Agent, BargeIn, CallRecord, TranscriptLine

__all__ = ["HIGH_WATER_MS", "CallRunner", "CallSetup"]

log = logging.getLogger("gateway.call")

HIGH_WATER_MS = 3000
"""Agent audio queued here above which the agent's socket is not read (back-pressure)."""
LOW_WATER_MS = 1000
"""Reading resumes when the queue is below this."""
_PENDING_FRAMES = 250  # caller audio held while the agent connects: 5 s, oldest dropped
_FORWARDING_PHASES = frozenset({Phase.ACTIVE, Phase.PLAYING_OUT})
"""Phases in which caller audio goes straight to the agent."""
_IDLE_MARGIN_S = 0.001  # past the last frame's end before playout counts as idle


class _CallOver(Exception):
    """Raised in the task group's body to cancel the call's tasks once it has ended."""


@dataclass(frozen=True, slots=True)
class CallSetup:
    """What the media handler established before the call runs."""

    conn: CarrierConnection
    """The carrier's socket: messages in from its read callback, frames out at once."""
    adapter: CarrierAdapter
    stream: MediaStream
    started: StreamStarted
    record: CallRecord
    agent: Agent
    lease: Lease


class CallRunner:
    """Runs one call; see the module docstring.

    Args:
        engine: the process's resources.
        setup: the accepted socket, its stream, the call's record, agent and lease.
        session: the call's session, already past ``MediaStarted``.
    """

    def __init__(self, engine: Engine, setup: CallSetup, session: CallSession) -> None:
        self.engine = engine
        self.setup = setup
        self.session = session
        self.call_id = setup.record.id
        self.loop = asyncio.get_running_loop()
        fmt = setup.started.audio_format
        self.agent_rate = 16000
        self.caller = CallerMedia(fmt, self.agent_rate, vad=True)
        self.agent_media = AgentMedia(
            self.agent_rate, fmt, lead_frames=engine.settings.pacer_lead_frames
        )
        self.barge_in = setup.agent.barge_in is BargeIn.ON
        self.link: AgentLink | None = None
        """The agent link, once built (the agent task builds and opens it)."""
        self.agent_ready = False
        self._send_agent_audio: Callable[[bytes], None] | None = None
        """The open link's audio sender (:meth:`AgentLink.audio_sender`)."""
        self.frames_to_agent = 0
        self.pending_dropped = 0
        """Caller frames dropped while the agent was still connecting (over 5 s)."""
        self._pending: deque[bytes] = deque(maxlen=_PENDING_FRAMES)
        self._pace_handle: asyncio.TimerHandle | None = None
        self._pace_at = 0.0
        """When the armed pacer callback runs (monotonic s)."""
        self._pace_stopped = False
        self._reading_paused = False
        self.keepalive = Keepalive(engine.settings.media_ping_interval_s, self.loop.time())
        self._timer_wake = asyncio.Event()
        self._ended = asyncio.Event()
        self._over = False
        self._billing_started = False
        """The session's ``billing_started``, copied after each :class:`AudioExchanged`."""
        """``_ended`` is set: a plain flag for the per-frame check."""
        self._inbox: deque[Event] = deque()
        self._failure: BaseException | None = None
        # Bound once: the per-frame calls of the carrier's stream and socket.
        self._receive_media = setup.stream.receive_media
        self._audio_message = setup.stream.audio_message
        self._carrier_send = setup.conn.send
        self.meter = CallMeter(engine.metrics, setup.adapter.name, setup.record.tenant_id)
        """The call's metrics (batched counts, sampled timings)."""

    # -- outside world -------------------------------------------------------------------

    def post(self, event: Event) -> None:
        """Deliver an event from outside the call's tasks (command, lease loss, drain)."""
        self._inbox.append(event)
        self._timer_wake.set()

    async def run(self) -> EndCall:
        """Run the call to its end and through the ending sequence; returns how it ended."""
        self.engine.live.add(self.call_id, self)
        self.meter.started()
        self.setup.conn.attach(self)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._agent_task(), name=f"agent-{self.call_id}")
                group.create_task(self._timer(), name=f"timer-{self.call_id}")
                await self._ended.wait()
                raise _CallOver
        except* _CallOver:
            pass
        except* Exception:
            log.exception("call %s: engine error", self.call_id)
        finally:
            self.setup.conn.detach()
            self._stop_pacing()
            if self._failure is not None:
                log.error("call %s: engine callback failed", self.call_id, exc_info=self._failure)
            if self.session.end is None:
                self._apply(HangupRequested(EndReason.INTERNAL_ERROR))
            await asyncio.shield(self._finish())
        assert self.session.end is not None
        return self.session.end

    async def _finish(self) -> None:
        try:
            await finish_call(self)
        finally:
            self.engine.live.remove(self.call_id)

    def drops(self) -> dict[str, int]:
        """The call's dropped-frame totals so far, by metrics drop reason."""
        pacer = self.agent_media.stats
        return {
            DropReason.AGENT_SLOW: 0 if self.link is None else self.link.stats().dropped_frames,
            DropReason.CONNECT_BACKLOG: self.pending_dropped,
            DropReason.OUTBOUND_OVERFLOW: pacer.frames_dropped + self.setup.conn.dropped,
            DropReason.CLEARED: pacer.frames_cleared,
        }

    def _carrier_failed(self, code: CloseCode) -> CarrierFailed:
        self.engine.metrics.websocket_rejected(code)
        return CarrierFailed(code)

    # -- the session ---------------------------------------------------------------------

    def _apply(self, event: Event) -> None:
        """Run one event through the session and act on what it decides (never waits).

        Checkpoints go to the engine's batcher (one database write for many calls).
        """
        if self.session.ended:
            return
        for action in self.session.handle(event, self.loop.time(), self.caller.media_ms):
            if isinstance(action, WarnAgent):
                self.to_agent([proto.DurationWarning(seconds_left=action.seconds_left)])
            elif isinstance(action, Checkpoint):
                at_ms = round(self.engine.wall_clock() * 1000)
                self.engine.checkpoints.submit(self.call_id, action.audio_ms, at_ms)
            else:
                log.info("call %s ends: %s", self.call_id, action.reason.value)
                self._stop_pacing()  # the stream may be stopping: nothing more is released
                self._end()
        self._timer_wake.set()

    # -- sending -------------------------------------------------------------------------

    def to_carrier(self, commands: list[Command]) -> None:
        """Send commands to the carrier now, in order (each message one whole frame)."""
        stream, socket = self.setup.stream, self.setup.conn
        for command in commands:
            for wire in stream.send(command):
                if not socket.send(wire) and not socket.writable:
                    return

    def to_agent(self, messages: list[proto.GatewayMessage]) -> None:
        """Send control messages to the agent, if it is connected."""
        if self.agent_ready and self.link is not None:
            for message in messages:
                self.link.send(message)

    def _send(self, out: Outputs) -> None:
        if out.carrier:
            self.to_carrier(out.carrier)
        if out.agent:
            self.to_agent(out.agent)

    # -- carrier reader ------------------------------------------------------------------

    def on_carrier_message(self, message: str | bytes, received_at: float) -> None:
        """One carrier message, from the socket's read callback (no task per frame)."""
        if self._over:
            return  # the call has ended: what the carrier still sends is not for it
        try:
            received = self._receive_media(message)
            if type(received) is bytes:  # caller audio: the per-frame case, no event built
                self._caller_audio(received, received_at)
                return
            for event in received:
                self._on_carrier_event(event, received_at)
        except CarrierProtocolError as exc:
            log.warning("call %s: %s", self.call_id, exc)
            self._apply(self._carrier_failed(CloseCode(exc.close_code)))
        except Exception as exc:  # a callback's exception would only reach the loop's log
            self._callback_failed(exc)

    def on_carrier_closed(self, failure: CloseCode | None) -> None:
        """The carrier hung up the socket (``None``), or the socket failed with ``failure``."""
        try:
            if failure is not None:
                self._apply(self._carrier_failed(failure))
                return
            for event in self.setup.stream.connection_closed():
                self._on_carrier_event(event, self.loop.time())
        except Exception as exc:
            self._callback_failed(exc)

    def _on_carrier_event(self, event: object, received_at: float) -> None:
        if isinstance(event, AudioReceived):
            self._caller_audio(event.payload, received_at)
        elif isinstance(event, DtmfReceived):
            self.to_agent([proto.Dtmf(digits=event.digit, duration_ms=event.duration_ms)])
        elif isinstance(event, MarkPlayed):
            self.agent_media.pacer.reconcile_carrier_mark(event.name, self.loop.time())
        elif isinstance(event, StreamStopped):
            self._apply(CallerHungUp(event.reason))

    def _caller_audio(self, payload: bytes, received_at: float) -> None:
        flush_due = self.meter.caller_frame()
        # The frame's arrival time is its "now": one clock read per frame, not two.
        pcm, out = self.caller.audio(
            payload, self.agent_media, barge_in=self.barge_in, now=received_at
        )
        phase = self.session.phase
        send = self._send_agent_audio
        if send is not None and self.agent_ready and phase in _FORWARDING_PHASES:
            send(pcm)
            self.meter.to_agent(received_at)
            self.frames_to_agent += 1
            if not self._billing_started:
                self._exchanged()
        elif phase is Phase.CONNECTING:
            if len(self._pending) == self._pending.maxlen:
                self.pending_dropped += 1  # the deque drops its oldest: count it
            self._pending.append(pcm)
        if out is not None:
            self._send(out)
        if flush_due:
            self.meter.flush(self.drops())

    # -- agent ---------------------------------------------------------------------------

    async def _agent_task(self) -> None:
        metrics = self.engine.metrics
        connecting = self.loop.time()
        try:
            link = self.link = await self.engine.links(self.engine, self.setup.agent)
            await link.open(agent_start(self.setup.record, self.setup.started, self.setup.agent.id))
        except AgentError as exc:
            log.warning("call %s: agent unreachable (%s)", self.call_id, exc.reason)
            metrics.agent_error(exc.reason)
            self._apply(AgentFailed(exc.reason))
            return
        metrics.agent_connected(self.loop.time() - connecting)
        self._send_agent_audio = link.audio_sender()
        self.agent_ready = True
        self._apply(AgentConnected())
        while self._pending:
            link.send_audio(self._pending.popleft())
            self.frames_to_agent += 1
        link.set_audio_sink(self._agent_audio)
        try:
            async for item in link:
                await self._agent_item(item)
        except AgentError as exc:
            log.warning("call %s: agent failed (%s)", self.call_id, exc.reason)
            metrics.agent_error(exc.reason)
            self.agent_ready = False
            self._apply(AgentFailed(exc.reason))
        finally:
            link.set_audio_sink(None)

    def _agent_audio(self, pcm: bytes) -> None:
        """Agent audio → the pacer (the link's sink: called from its read callback)."""
        now = self.loop.time()
        media = self.agent_media
        started = media.audio(pcm, now)
        if started:
            self.meter.agent_audio(queue_was_empty=True)
        if not self._pace_stopped and (
            started or self._pace_handle is None or media.pacer.is_due(now)
        ):
            # What is due goes now (an agent streaming in real time: this very frame, no
            # timer); the rest waits for the timer this arms. Behind queued audio with the
            # writer armed, nothing is due unless its deadline has come: the armed timer is
            # the earliest deadline (marks included), and it already covers this frame.
            self._pace_due(now)
        if not self._billing_started and self.session.phase is Phase.ACTIVE:
            self._exchanged()
        if media.queued_ms > HIGH_WATER_MS and not self._reading_paused and self.link:
            self._reading_paused = True
            self.link.pause_reading()

    async def _agent_item(self, item: bytes | proto.AgentMessage) -> None:
        now = self.loop.time()
        if isinstance(item, bytes):
            self._agent_audio(item)
        elif isinstance(item, proto.Clear):
            _, out = self.agent_media.clear(now)
            self._send(out)
        elif isinstance(item, proto.Mark):
            self.agent_media.mark(item.name, now)
            self._arm_pacer()
        elif isinstance(item, proto.Hangup):
            if self.session.phase is Phase.ACTIVE:
                self.agent_media.finish(now)
                self._apply(AgentHungUp(item.reason))
                self._arm_pacer()
        elif isinstance(item, proto.Dtmf):
            self._agent_dtmf(item.digits)
        elif isinstance(item, proto.Transcript):
            line = TranscriptLine(item.role, item.text, round(self.engine.wall_clock() * 1000))
            await self.engine.state.ledger.append_transcript(self.call_id, [line])
        else:
            log.info("call %s: agent reported error %s", self.call_id, item.code)

    def _agent_dtmf(self, digits: str) -> None:
        try:
            self.to_carrier([SendDtmf(digits)])
        except CommandError:
            message = f"{self.setup.adapter.name} media streams cannot send DTMF"
            self.to_agent([proto.Error(code="dtmf_unsupported", message=message)])

    # -- paced writer (a timer callback) -------------------------------------------------

    def _arm_pacer(self) -> None:
        """Schedule :meth:`_pace` for the pacer's next deadline (earlier wins)."""
        if self._pace_stopped:
            return
        media = self.agent_media
        deadline = media.pacer.next_deadline()
        if self.session.phase is Phase.PLAYING_OUT and media.pacer.queued_frames == 0:
            # The agent hung up: once the carrier has played what it holds, the call ends.
            now = self.loop.time()
            idle_at = now + media.pacer.ahead_ms(now) / 1000 + _IDLE_MARGIN_S
            deadline = idle_at if deadline is None else min(deadline, idle_at)
        if deadline is None:
            return
        handle = self._pace_handle
        if handle is not None:
            if self._pace_at <= deadline:
                return
            handle.cancel()  # (uvloop's timer handles have no when(): the time is kept here)
        self._pace_at = deadline
        self._pace_handle = self.loop.call_at(deadline, self._pace)

    def _pace(self) -> None:
        """The armed timer: release what is due now."""
        self._pace_handle = None
        self._pace_due(self.loop.time())

    def _pace_due(self, now: float) -> None:
        """Release what is due at ``now``, then re-arm; a failure here ends the call."""
        try:
            media = self.agent_media
            self._release(media, now)
            if self._reading_paused and media.queued_ms < LOW_WATER_MS and self.link:
                self._reading_paused = False
                self.link.resume_reading()
            if self.session.phase is Phase.PLAYING_OUT and self._played_out(media):
                self._pace_stopped = True
                self._apply(PlayoutIdle())
                return
            self._arm_pacer()
        except Exception as exc:  # a callback's exception would only reach the loop's log
            self._callback_failed(exc)

    def _callback_failed(self, exc: Exception) -> None:
        """A callback of the call (paced writer, carrier message) failed: end the call."""
        if self._failure is None:
            self._failure = exc
        self._pace_stopped = True
        self._end()

    def _exchanged(self) -> None:
        """Audio went both ways: billing starts (the session decides; later ones are moot)."""
        self._apply(AudioExchanged())
        self._billing_started = self.session.billing_started

    def _end(self) -> None:
        self._over = True
        self._ended.set()

    def _played_out(self, media: AgentMedia) -> bool:
        """In ``PLAYING_OUT`` (the agent hung up): the caller has heard all it sent."""
        return media.pacer.queued_frames == 0 and media.pacer.ahead_ms(self.loop.time()) == 0

    def _release(self, media: AgentMedia, now: float) -> None:
        """Send what is due at ``now`` and meter it (lateness against its due time)."""
        pacer, meter = media.pacer, self.meter
        # Before the release moves the pacer on; only on the releases the meter samples.
        continuous = meter.samples_next_release and pacer.ahead_ms(now) > 0
        frames, marks = media.release(now)
        if frames:
            self._play(frames)
        if marks is not None:
            self._send(marks)
        if frames and meter.released(len(frames), pacer.released_due, self.loop.time(), continuous):
            meter.flush(self.drops())

    def _play(self, frames: list[bytes]) -> None:
        """Write audio frames to the carrier, one message each (the per-frame path)."""
        audio_message, send = self._audio_message, self._carrier_send
        for frame in frames:
            if not send(audio_message(frame)) and not self.setup.conn.writable:
                return

    def _stop_pacing(self) -> None:
        self._pace_stopped = True
        if self._pace_handle is not None:
            self._pace_handle.cancel()
            self._pace_handle = None

    # -- timers, checkpoints and posted events -------------------------------------------

    async def _timer(self) -> None:
        while True:
            while self._inbox:
                self._apply(self._inbox.popleft())
            now = self.loop.time()
            if now >= self.keepalive.next_at:
                self._keepalive(now)
                continue
            deadline = self.session.next_deadline()
            if deadline is not None and deadline <= now:
                self._apply(Tick())
                continue
            keepalive_at = self.keepalive.next_at
            wake = keepalive_at if deadline is None else min(deadline, keepalive_at)
            self._timer_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - now)):
                    await self._timer_wake.wait()

    def _keepalive(self, now: float) -> None:
        """Ping the carrier, or end the call if it sent no audio for an interval (1011)."""
        if self.keepalive.check(now, self.meter.frames_in):
            self.setup.conn.ping()
            return
        silent = self.keepalive.interval_s
        log.warning("call %s: no caller audio for %.0f s: connection lost", self.call_id, silent)
        self._apply(self._carrier_failed(CloseCode.INTERNAL_ERROR))
