"""One live call: a task group bridging the carrier's socket and the agent link.

Four tasks per call (:meth:`CallRunner.run`), one ``asyncio.TaskGroup``:

* **carrier reader**: carrier messages → events; caller audio decoded and resampled
  (:class:`~gateway.media.CallerMedia`) and queued to the agent (the link's queue is
  bounded and drops the oldest, counted); VAD barge-in; DTMF; mark echoes reconciled.
* **agent task**: opens the link, then agent audio → exact 20 ms frames into the pacer
  (:class:`~gateway.media.AgentMedia`), and agent control messages. It stops reading
  while more than :data:`HIGH_WATER_MS` is queued, so TCP slows a fast agent down.
* **paced writer**: releases frames on the monotonic clock (``loop.time()``), sends the
  marks behind them, tells the agent which marks were heard.
* **timer**: the session's deadlines (start, warning, max duration, checkpoints,
  grace) and events posted from outside (commands, lease loss, drain).

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
from dataclasses import dataclass

from aiohttp import WSMsgType, web

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
    PlayAudio,
    SendDtmf,
    StreamStarted,
    StreamStopped,
)
from gateway.errors import AgentError, CarrierProtocolError, CloseCode, CommandError
from gateway.media import AgentMedia, CallerMedia, Outputs
from gateway.metrics import DropReason
from gateway.server.answer import FROM_PARAMETER, LEASE_PARAMETER
from gateway.server.context import Engine
from gateway.server.finish import finish_call
from gateway.server.limits import MessageRate
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


class _CallOver(Exception):
    """Raised in the task group's body to cancel the call's tasks once it has ended."""


@dataclass(frozen=True, slots=True)
class CallSetup:
    """What the media handler established before the call runs."""

    ws: web.WebSocketResponse
    adapter: CarrierAdapter
    stream: MediaStream
    started: StreamStarted
    record: CallRecord
    agent: Agent
    lease: Lease
    rate: MessageRate


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
        self.frames_to_agent = 0
        self.pending_dropped = 0
        """Caller frames dropped while the agent was still connecting (over 5 s)."""
        self._pending: deque[bytes] = deque(maxlen=_PENDING_FRAMES)
        self._send_lock = asyncio.Lock()
        self._writer_wake = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ended = asyncio.Event()
        self._inbox: deque[Event] = deque()
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
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._carrier_reader(), name=f"carrier-{self.call_id}")
                group.create_task(self._agent_task(), name=f"agent-{self.call_id}")
                group.create_task(self._writer(), name=f"writer-{self.call_id}")
                group.create_task(self._timer(), name=f"timer-{self.call_id}")
                await self._ended.wait()
                raise _CallOver
        except* _CallOver:
            pass
        except* Exception:
            log.exception("call %s: engine error", self.call_id)
        finally:
            if self.session.end is None:
                await self._apply(HangupRequested(EndReason.INTERNAL_ERROR))
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
            DropReason.OUTBOUND_OVERFLOW: pacer.frames_dropped,
            DropReason.CLEARED: pacer.frames_cleared,
        }

    def _carrier_failed(self, code: CloseCode) -> CarrierFailed:
        self.engine.metrics.websocket_rejected(code)
        return CarrierFailed(code)

    # -- the session ---------------------------------------------------------------------

    async def _apply(self, event: Event) -> None:
        if self.session.ended:
            return
        for action in self.session.handle(event, self.loop.time()):
            if isinstance(action, WarnAgent):
                await self.to_agent([proto.DurationWarning(seconds_left=action.seconds_left)])
            elif isinstance(action, Checkpoint):
                await self._checkpoint(action.audio_ms)
            else:
                log.info("call %s ends: %s", self.call_id, action.reason.value)
                self._ended.set()
        self._timer_wake.set()

    async def _checkpoint(self, audio_ms: int) -> None:
        try:
            await self.engine.state.ledger.checkpoint(
                self.call_id, audio_ms, round(self.engine.wall_clock() * 1000)
            )
        except Exception:  # a missed checkpoint costs at most one interval; the call goes on
            log.exception("call %s: checkpoint failed", self.call_id)

    # -- sending -------------------------------------------------------------------------

    async def to_carrier(self, commands: list[Command]) -> None:
        """Send commands to the carrier in order (one writer at a time)."""
        ws, stream = self.setup.ws, self.setup.stream
        async with self._send_lock:
            for command in commands:
                for wire in stream.send(command):
                    if ws.closed:
                        return
                    if isinstance(wire, str):
                        await ws.send_str(wire)
                    else:
                        await ws.send_bytes(wire)

    async def to_agent(self, messages: list[proto.GatewayMessage]) -> None:
        """Send control messages to the agent, if it is connected."""
        if self.agent_ready and self.link is not None:
            for message in messages:
                await self.link.send(message)

    async def _send(self, out: Outputs) -> None:
        if out.carrier:
            await self.to_carrier(out.carrier)
        if out.agent:
            await self.to_agent(out.agent)

    # -- carrier reader ------------------------------------------------------------------

    async def _carrier_reader(self) -> None:
        ws, stream, rate = self.setup.ws, self.setup.stream, self.setup.rate
        try:
            async for msg in ws:
                if msg.type is WSMsgType.ERROR:
                    # aiohttp failed the connection itself (e.g. 1009, over max_msg_size).
                    await self._apply(self._carrier_failed(_close_code(ws.close_code)))
                    return
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                if not rate.allow(self.loop.time()):
                    log.warning("call %s: carrier message rate over the limit", self.call_id)
                    await self._apply(self._carrier_failed(CloseCode.POLICY_VIOLATION))
                    return
                received_at = self.loop.time()
                for event in stream.receive(msg.data):
                    await self._on_carrier_event(event, received_at)
        except CarrierProtocolError as exc:
            log.warning("call %s: %s", self.call_id, exc)
            await self._apply(self._carrier_failed(CloseCode(exc.close_code)))
            return
        for event in stream.connection_closed():
            await self._on_carrier_event(event, self.loop.time())

    async def _on_carrier_event(self, event: object, received_at: float) -> None:
        if isinstance(event, AudioReceived):
            await self._caller_audio(event.payload, received_at)
        elif isinstance(event, DtmfReceived):
            await self.to_agent([proto.Dtmf(digits=event.digit, duration_ms=event.duration_ms)])
        elif isinstance(event, MarkPlayed):
            self.agent_media.pacer.reconcile_carrier_mark(event.name, self.loop.time())
        elif isinstance(event, StreamStopped):
            await self._apply(CallerHungUp(event.reason))

    async def _caller_audio(self, payload: bytes, received_at: float) -> None:
        flush_due = self.meter.caller_frame()
        # The frame's arrival time is its "now": one clock read per frame, not two.
        pcm, out = self.caller.audio(
            payload, self.agent_media, barge_in=self.barge_in, now=received_at
        )
        phase = self.session.phase
        if self.link is not None and self.agent_ready and phase in _FORWARDING_PHASES:
            await self.link.send_audio(pcm)
            self.meter.to_agent(received_at, self.loop.time())
            self.frames_to_agent += 1
            if not self.session.billing_started:
                await self._apply(AudioExchanged())
        elif phase is Phase.CONNECTING:
            if len(self._pending) == self._pending.maxlen:
                self.pending_dropped += 1  # the deque drops its oldest: count it
            self._pending.append(pcm)
        await self._send(out)
        if flush_due:
            self.meter.flush(self.drops())

    # -- agent ---------------------------------------------------------------------------

    async def _agent_task(self) -> None:
        metrics = self.engine.metrics
        connecting = self.loop.time()
        try:
            link = self.link = await self.engine.links(self.engine, self.setup.agent)
            await link.open(self._start_message())
        except AgentError as exc:
            log.warning("call %s: agent unreachable (%s)", self.call_id, exc.reason)
            metrics.agent_error(exc.reason)
            await self._apply(AgentFailed(exc.reason))
            return
        metrics.agent_connected(self.loop.time() - connecting)
        self.agent_ready = True
        await self._apply(AgentConnected())
        while self._pending:
            await link.send_audio(self._pending.popleft())
            self.frames_to_agent += 1
        try:
            async for item in link:
                await self._agent_item(item)
        except AgentError as exc:
            log.warning("call %s: agent failed (%s)", self.call_id, exc.reason)
            metrics.agent_error(exc.reason)
            self.agent_ready = False
            await self._apply(AgentFailed(exc.reason))

    def _start_message(self) -> proto.Start:
        record, started = self.setup.record, self.setup.started
        hidden = (LEASE_PARAMETER, FROM_PARAMETER, "call_uuid")
        params = {k: v for k, v in started.custom_parameters.items() if k not in hidden}
        return proto.Start(
            call_id=record.id,
            tenant_id=record.tenant_id,
            agent_id=self.setup.agent.id,
            from_=self._from_number(),
            to=record.number,
            carrier=record.carrier,
            carrier_call_id=record.carrier_call_id,
            direction=record.direction.value,
            max_duration_s=record.max_call_duration_s,
            parameters={k[:64]: v[:1024] for k, v in list(params.items())[:32]},
        )

    def _from_number(self) -> str:
        digits = self.setup.started.custom_parameters.get(FROM_PARAMETER, "")
        return f"+{digits}" if digits.isdigit() else digits or "unknown"

    async def _agent_item(self, item: bytes | proto.AgentMessage) -> None:
        now = self.loop.time()
        if isinstance(item, bytes):
            was_empty = self.agent_media.pacer.queued_frames == 0
            self.agent_media.audio(item, now)
            if was_empty and self.agent_media.pacer.queued_frames:
                self.meter.agent_audio(now, queue_was_empty=True)
            self._writer_wake.set()
            if not self.session.billing_started and self.session.phase is Phase.ACTIVE:
                await self._apply(AudioExchanged())
            if self.agent_media.queued_ms > HIGH_WATER_MS:
                self._room.clear()
                await self._room.wait()
        elif isinstance(item, proto.Clear):
            _, out = self.agent_media.clear(now)
            await self._send(out)
        elif isinstance(item, proto.Mark):
            self.agent_media.mark(item.name, now)
            self._writer_wake.set()
        elif isinstance(item, proto.Hangup):
            if self.session.phase is Phase.ACTIVE:
                self.agent_media.finish(now)
                await self._apply(AgentHungUp(item.reason))
                self._writer_wake.set()
        elif isinstance(item, proto.Dtmf):
            await self._agent_dtmf(item.digits)
        elif isinstance(item, proto.Transcript):
            line = TranscriptLine(item.role, item.text, round(self.engine.wall_clock() * 1000))
            await self.engine.state.ledger.append_transcript(self.call_id, [line])
        else:
            log.info("call %s: agent reported error %s", self.call_id, item.code)

    async def _agent_dtmf(self, digits: str) -> None:
        try:
            await self.to_carrier([SendDtmf(digits)])
        except CommandError:
            message = f"{self.setup.adapter.name} media streams cannot send DTMF"
            await self.to_agent([proto.Error(code="dtmf_unsupported", message=message)])

    # -- paced writer --------------------------------------------------------------------

    async def _writer(self) -> None:
        media = self.agent_media
        while True:
            self._writer_wake.clear()
            await self._release(media)
            if not self._room.is_set() and media.queued_ms < LOW_WATER_MS:
                self._room.set()
            now = self.loop.time()
            timeout = _until(media.next_deadline(), now)
            if self.session.phase is Phase.PLAYING_OUT and media.pacer.queued_frames == 0:
                ahead = media.pacer.ahead_ms(now)
                if ahead == 0:
                    await self._apply(PlayoutIdle())
                    return
                timeout = min(timeout or 1.0, ahead / 1000 + 0.001)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._writer_wake.wait()

    async def _release(self, media: AgentMedia) -> None:
        """Send what is due now and meter it (lateness against the head frame's due time)."""
        now = self.loop.time()
        head_due = media.next_deadline()
        continuous = media.pacer.ahead_ms(now) > 0
        out = media.due(now)
        await self._send(out)
        count = sum(1 for command in out.carrier if isinstance(command, PlayAudio))
        if count and self.meter.released(count, head_due, self.loop.time(), continuous):
            self.meter.flush(self.drops())

    # -- timers and posted events --------------------------------------------------------

    async def _timer(self) -> None:
        while True:
            while self._inbox:
                await self._apply(self._inbox.popleft())
            now = self.loop.time()
            deadline = self.session.next_deadline()
            if deadline is not None and deadline <= now:
                await self._apply(Tick())
                continue
            self._timer_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_until(deadline, now)):
                    await self._timer_wake.wait()


def _close_code(code: int | None) -> CloseCode:
    """The close code aiohttp used, as ours (protocol error when it is not one of ours)."""
    try:
        return CloseCode(code) if code is not None else CloseCode.PROTOCOL_ERROR
    except ValueError:
        return CloseCode.PROTOCOL_ERROR


def _until(deadline: float | None, now: float) -> float | None:
    """Seconds from ``now`` to ``deadline`` (None: no deadline), never negative."""
    return None if deadline is None else max(0.0, deadline - now)
