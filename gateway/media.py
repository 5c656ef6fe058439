"""One call's audio, both ways, with no I/O: codecs, VAD barge-in, pacing, marks.

The per-frame fast path lives here, beside the session rather than in it, so the
session's state machine stays small and the audio work stays a few function calls::

    caller → agent   CallerMedia: carrier payload → PCM16 at the agent rate (+ VAD)
    agent → caller   AgentMedia:  PCM16 → exact 20 ms carrier frames → Pacer → commands

Both return carrier commands (:mod:`gateway.carriers.events`) and agent messages
(:mod:`gateway.bridge.protocol`) for the edge to send, in order. Time comes in as
``now``, monotonic seconds (the edge uses ``loop.time()``).

Barge-in: when the agent's barge-in setting is on and the VAD hears the caller start
speaking while agent audio is unheard (queued here or ahead at the carrier), the agent's
audio is cleared at once: the pacer drops its queue, the carrier gets its clear, and
the agent gets ``barge_in`` then ``mark_cleared`` for each pending mark. With the
setting off the agent only gets ``speech_started`` and may send ``clear`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.bridge.protocol import (
    BargeIn,
    GatewayMessage,
    MarkCleared,
    MarkPlayed,
    SpeechEnded,
    SpeechStarted,
)
from gateway.carriers.events import ClearPlayback, Command, Mark
from gateway.pacing import ClearResult, Pacer, PacerStats
from rymi_codecs import AgentToCaller, AudioFormat, CallerToAgent, VoiceActivityDetector
from rymi_codecs import SpeechStarted as VadStarted

__all__ = ["AgentMedia", "CallerMedia", "Outputs"]

_VAD_RATES = (8000, 16000, 32000, 48000)


@dataclass(slots=True)
class Outputs:
    """What the edge sends after one step: carrier commands, then agent messages."""

    carrier: list[Command] = field(default_factory=list)
    agent: list[GatewayMessage] = field(default_factory=list)

    def extend(self, other: Outputs) -> None:
        """Append ``other``'s outputs after these."""
        self.carrier.extend(other.carrier)
        self.agent.extend(other.agent)


class AgentMedia:
    """Agent PCM16 → exact carrier frames, paced in real time, with marks and clears.

    Args:
        agent_rate: PCM16 rate the agent sends, Hz.
        carrier: the carrier stream's format.
        lead_frames: frames kept at the carrier ahead of the caller's ear.
        max_queue_frames: frames held here at most (oldest dropped beyond).
    """

    def __init__(
        self,
        agent_rate: int,
        carrier: AudioFormat,
        *,
        lead_frames: int = 3,
        max_queue_frames: int = 500,
    ) -> None:
        self._chain = AgentToCaller(agent_rate, carrier)
        self.pacer = Pacer(
            lead_frames=lead_frames,
            max_queue_frames=max_queue_frames,
            frame_bytes=carrier.bytes_per_frame(),
        )

    def audio(self, pcm: bytes, now: float) -> bool:
        """Queue agent audio (any whole number of samples).

        Returns whether it starts a queue: the pacer held nothing before and holds audio
        now (the meter times a frame from there to the carrier).
        """
        pacer = self.pacer
        was_empty = pacer.queued_frames == 0
        for frame in self._chain.process(pcm):
            pacer.enqueue(frame, now)
        return was_empty and pacer.queued_frames > 0

    def mark(self, name: str, now: float) -> None:
        """Place the agent's mark after the audio queued so far.

        Audio still inside the resampler/framer is flushed first (padded to a whole
        frame), so the mark really sits after everything the agent sent before it.
        """
        for frame in self._chain.flush(pad=True):
            self.pacer.enqueue(frame, now)
        self.pacer.mark(name, now)

    def clear(self, now: float) -> tuple[ClearResult, Outputs]:
        """Drop everything unheard; returns what was heard and what to send."""
        self._chain.clear()
        result = self.pacer.clear(now)
        out = Outputs(carrier=[ClearPlayback()])
        out.agent.extend(
            MarkPlayed(name=m.name, heard_ms=m.heard_ms, position_ms=m.position_ms)
            for m in result.played_marks
        )
        out.agent.extend(
            MarkCleared(name=m.name, heard_ms=m.heard_ms, position_ms=m.position_ms)
            for m in result.cleared_marks
        )
        return result, out

    def release(self, now: float) -> tuple[list[bytes], Outputs | None]:
        """Frames to send now, then the marks now behind them and the marks the ear passed.

        The frames go to the carrier first (each one message: ``audio_message``), then the
        outputs' ``Mark`` commands; the outputs are None when no mark is pending (the
        common case: nothing to build).
        """
        pacer = self.pacer
        frames = pacer.due(now)
        if not pacer.marks_pending:
            return frames, None
        out = Outputs(carrier=[Mark(name) for name in pacer.sent_marks()])
        out.agent.extend(
            MarkPlayed(name=m.name, heard_ms=m.heard_ms, position_ms=m.position_ms)
            for m in pacer.marks_played(now)
        )
        return frames, out

    def unheard(self, now: float) -> bool:
        """Whether any agent audio is still queued here or ahead at the carrier."""
        return self.pacer.queued_frames > 0 or self.pacer.ahead_ms(now) > 0

    def finish(self, now: float) -> None:
        """The agent's turn is over (it hung up): queue the tail of its audio."""
        for frame in self._chain.flush(pad=True):
            self.pacer.enqueue(frame, now)

    @property
    def queued_ms(self) -> int:
        """Milliseconds waiting here: the back-pressure signal for the agent reader."""
        return self.pacer.queued_ms

    @property
    def stats(self) -> PacerStats:
        """The pacer's counters."""
        return self.pacer.stats


class CallerMedia:
    """Caller audio in the carrier's format → PCM16 at the agent's rate, with VAD.

    Args:
        carrier: the carrier stream's format.
        agent_rate: PCM16 rate the agent receives, Hz.
        vad: run the gateway's VAD (speech events, barge-in).
    """

    def __init__(self, carrier: AudioFormat, agent_rate: int, *, vad: bool = True) -> None:
        detector = None
        if vad:
            rate = carrier.sample_rate if carrier.sample_rate in _VAD_RATES else agent_rate
            detector = VoiceActivityDetector(sample_rate=rate)
        self._chain = CallerToAgent(carrier, agent_rate, detector)
        self._bytes_per_second = carrier.bytes_per_second
        self.frames = 0
        """Caller payloads processed."""
        self.received_bytes = 0
        """Caller audio received, in bytes of the carrier's format."""

    @property
    def media_ms(self) -> int:
        """The caller's media clock: milliseconds of caller audio received so far.

        Carriers stream the caller's audio continuously in real time, silence included
        (docs/architecture.md), so this is the call's duration by the carrier's clock.
        """
        return self.received_bytes * 1000 // self._bytes_per_second

    def audio(
        self, payload: bytes, agent: AgentMedia, *, barge_in: bool, now: float
    ) -> tuple[bytes, Outputs | None]:
        """Decode one caller payload; returns the agent's PCM and what else to send.

        The outputs are None when the frame changed nothing else (no VAD transition):
        the per-frame case builds no :class:`Outputs`.
        """
        chain = self._chain
        pcm = chain.process(payload)
        self.frames += 1
        self.received_bytes += len(payload)
        if not chain.events:
            return pcm, None
        events = chain.events_received()
        out = Outputs()
        for event in events:
            if isinstance(event, VadStarted):
                out.agent.append(SpeechStarted(at_ms=event.start_ms))
                if barge_in and agent.unheard(now):
                    result, cleared = agent.clear(now)
                    discarded = result.flushed_ms + result.dropped_frames * 20
                    out.carrier.extend(cleared.carrier)
                    out.agent.append(BargeIn(heard_ms=result.heard_ms, discarded_ms=discarded))
                    out.agent.extend(cleared.agent)
            else:
                out.agent.append(SpeechEnded(at_ms=event.end_ms))
        return pcm, out

    def flush(self) -> tuple[bytes, Outputs]:
        """End of the call: the resampler's tail and a closing ``speech_ended``."""
        pcm = self._chain.flush()
        out = Outputs()
        for event in self._chain.events_received():
            if not isinstance(event, VadStarted):
                out.agent.append(SpeechEnded(at_ms=event.end_ms))
        return pcm, out
