"""The talk/listen agent of the reference agent server (``--mode pattern``), sans I/O.

:class:`PatternCore` talks for ``talk_ms`` and listens for ``listen_ms`` in turn, sending
20 ms of its source (a tone, or a looped WAV fixture) per 20 ms caller frame received:
the caller's audio is its clock (docs/agent-protocol.md §3), so it needs none of its own.
Each spurt starts with a ``transcript`` line ``<talk N>`` and ends with a ``mark``
``talk-N``; a ``barge_in`` cuts the spurt short; ``hangup_after_ms`` ends the call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gateway.bridge.link import AgentItem
from gateway.bridge.protocol import (
    BargeIn,
    GatewayMessage,
    Hangup,
    Mark,
    Start,
    Stop,
    Transcript,
)
from rymi_codecs import FRAME_MS, Resampler

__all__ = ["PatternCore", "PatternStats", "ProbeCore", "ProbeStats", "tone"]


@dataclass(slots=True)
class PatternStats:
    """What one call's pattern agent did."""

    caller_frames: int = 0
    spurts: int = 0
    talked_ms: int = 0
    marks_sent: int = 0
    barge_ins: int = 0
    stop_reason: str | None = None


class PatternCore:
    """Talk ``talk_ms``, listen ``listen_ms``, again; clocked by the caller's frames.

    Args:
        start: the call's ``start``.
        source: PCM16 at ``start.agent_audio``'s rate to talk (looped), >= 20 ms.
        talk_ms: length of each spurt, ms (> 0).
        listen_ms: silence between spurts, ms (>= 0).
        hangup_after_ms: send ``hangup`` after this much caller audio; None: never.
    """

    def __init__(
        self,
        start: Start,
        source: bytes,
        *,
        talk_ms: int,
        listen_ms: int,
        hangup_after_ms: int | None = None,
    ) -> None:
        self._frame = start.agent_audio.sample_rate * 2 * FRAME_MS // 1000
        if len(source) < self._frame or talk_ms <= 0 or listen_ms < 0:
            raise ValueError("expected >= 20 ms of source audio, talk_ms > 0, listen_ms >= 0")
        self._source = source
        self._pos = 0
        self._cycle = (talk_ms + listen_ms) // FRAME_MS
        self._talk_frames = max(talk_ms // FRAME_MS, 1)
        self._hangup_frame = None if hangup_after_ms is None else hangup_after_ms // FRAME_MS
        self._done = False
        self._cut = False  # a barge-in ended the current spurt early
        self._stats = PatternStats()

    def stats(self) -> PatternStats:
        """A copy of the call's counters."""
        return replace(self._stats)

    def receive_audio(self, pcm: bytes) -> list[AgentItem]:
        """One caller frame (any size counts as one tick of 20 ms): talk or listen."""
        if self._done:
            return []
        stats = self._stats
        tick = stats.caller_frames % self._cycle if self._cycle else 0
        stats.caller_frames += 1
        if self._hangup_frame is not None and stats.caller_frames >= self._hangup_frame:
            self._done = True
            return [Hangup(reason="pattern_done")]
        if tick == 0:
            self._cut = False
            stats.spurts += 1
            out: list[AgentItem] = [Transcript(role="agent", text=f"<talk {stats.spurts}>")]
        else:
            out = []
        if tick < self._talk_frames and not self._cut:
            out.append(self._next_frame())
            stats.talked_ms += FRAME_MS
            if tick == self._talk_frames - 1:
                out.append(Mark(name=f"talk-{stats.spurts}"))
                stats.marks_sent += 1
        return out

    def receive_message(self, message: GatewayMessage) -> list[AgentItem]:
        """Barge-in cuts the current spurt; stop ends the call."""
        if isinstance(message, BargeIn):
            self._stats.barge_ins += 1
            self._cut = True
        elif isinstance(message, Stop):
            self._stats.stop_reason = message.reason
            self._done = True
        return []

    def _next_frame(self) -> bytes:
        end = self._pos + self._frame
        if end <= len(self._source):
            chunk = self._source[self._pos : end]
        else:  # wrap around the loop
            end -= len(self._source)
            chunk = self._source[self._pos :] + self._source[:end]
        self._pos = end
        return chunk


@dataclass(slots=True)
class ProbeStats:
    """What one call's probe agent did."""

    caller_frames: int = 0
    stop_reason: str | None = None


class ProbeCore:
    """Send every caller frame straight back (``--mode probe``), for the load tester.

    Unlike :class:`~gateway.bridge.echo.EchoCore`, which waits for the end of each
    utterance, the probe answers each 20 ms frame at once, so the audio the carrier hears
    is the caller's own stream shifted by the round trip: the load tester identifies each
    frame by its position and content and times both legs (docs/loadtest.md). Caller
    audio is resampled when ``start`` asks for a different agent rate.
    """

    def __init__(self, start: Start) -> None:
        caller, agent = start.caller_audio.sample_rate, start.agent_audio.sample_rate
        self._resampler = Resampler(caller, agent) if caller != agent else None
        self._stats = ProbeStats()

    def stats(self) -> ProbeStats:
        """A copy of the call's counters."""
        return replace(self._stats)

    def receive_audio(self, pcm: bytes) -> list[AgentItem]:
        """One caller frame: the same audio back."""
        self._stats.caller_frames += 1
        out = pcm if self._resampler is None else self._resampler.process(pcm)
        return [out] if out else []

    def receive_message(self, message: GatewayMessage) -> list[AgentItem]:
        """Nothing to answer; ``stop`` is recorded."""
        if isinstance(message, Stop):
            self._stats.stop_reason = message.reason
        return []


def tone(rate: int, hz: float, dbfs: float = -12.0) -> bytes:
    """One second of a sine at ``hz`` as PCM16 (loops seamlessly when ``hz`` is whole)."""
    t = np.arange(rate) / rate
    amplitude = 32767 * 10 ** (dbfs / 20)
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()
