"""The ``echo`` agent: plays each caller utterance back once the caller stops talking.

It is the demo's agent, the tests' and the load tester's (in-process behind
:class:`~gateway.bridge.builtin.BuiltinLink`, and as a real agent process in
``loadtest/agent_server.py``), so it exercises every part of the protocol an agent uses:

* **Utterances.** WebRTC's VAD (:class:`rymi_codecs.VoiceActivityDetector`, 3 frames to
  start, 15 to end) runs on the caller audio. At speech end, the audio from speech start
  minus ``pre_roll_ms`` to speech end is played back at ``start.agent_audio``'s rate
  (resampled when the two rates differ), bit for bit when they are equal.
* **Messages per utterance N:** a ``transcript`` line ``<echo of utterance N, X ms>``
  (role ``agent``; there is no ASR) when the utterance ends, then the audio, then a
  ``mark`` named ``utt-N``. Mark answers are counted.
* **Pacing.** Like a well-behaved streaming TTS, it sends ``lead_ms`` at once and then
  20 ms per caller frame received (the caller stream is the clock: 20 ms per 20 ms),
  so a barge-in has something left to stop.
* **Barge-in.** ``barge_in`` from the gateway drops the playback not yet sent, with its
  mark (the gateway has already cleared what it held).
* **Keys.** Digits and ``A``-``D`` are answered with a transcript line ``<dtmf 5>`` and
  collected; ``#`` plays the collected digits back to the caller as a ``dtmf`` message
  (where the carrier cannot send DTMF, the gateway answers ``error``, which is counted);
  ``*`` hangs up with reason ``caller_requested``.
* ``duration_warning`` gets a transcript line ``<N s left>``; ``stop`` ends everything.

Per caller frame the cost is one VAD decision (a few microseconds in C) and a
bytearray append: it runs at hundreds of calls per core.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Final

from gateway.bridge.link import AgentItem
from gateway.bridge.protocol import (
    BargeIn,
    Dtmf,
    DurationWarning,
    Error,
    GatewayMessage,
    Hangup,
    Mark,
    MarkCleared,
    MarkPlayed,
    Start,
    Stop,
    Transcript,
)
from rymi_codecs import FRAME_MS, AudioFormat, Encoding, Framer, Resampler, VoiceActivityDetector
from rymi_codecs.vad import VAD_RATES, SpeechEnded, SpeechStarted

__all__ = ["HANGUP_KEY", "PLAYBACK_KEY", "EchoCore", "EchoStats"]

HANGUP_KEY: Final = "*"
"""The key that makes the echo agent hang up."""
PLAYBACK_KEY: Final = "#"
"""The key that makes the echo agent send the collected digits back as DTMF."""
_START_FRAMES, _END_FRAMES = 3, 15  # VAD hangover: 60 ms to start, 300 ms of quiet to end
_MAX_KEYS = 32  # docs/agent-protocol.md §5: at most 32 digits per dtmf message


@dataclass(slots=True)
class EchoStats:
    """What one call's echo agent did."""

    caller_frames: int = 0
    utterances: int = 0
    echoed_ms: int = 0
    """Agent audio sent, at the agent rate, ms."""
    marks_sent: int = 0
    marks_played: int = 0
    marks_cleared: int = 0
    barge_ins: int = 0
    dtmf_digits: int = 0
    errors: int = 0
    """``error`` messages received from the gateway."""
    stop_reason: str | None = None


class EchoCore:
    """One call's echo agent, sans I/O (an :class:`~gateway.bridge.builtin.AgentCore`).

    Args:
        start: the call's ``start`` (audio formats).
        pre_roll_ms: audio kept before the detected speech start (VAD onsets are late).
        lead_ms: audio sent at once when a playback starts, before pacing to real time.
        max_utterance_ms: longest utterance; a longer one is played back in pieces.
        vad_aggressiveness: WebRTC VAD mode 0-3.
    """

    def __init__(
        self,
        start: Start,
        *,
        pre_roll_ms: int = 200,
        lead_ms: int = 200,
        max_utterance_ms: int = 20_000,
        vad_aggressiveness: int = 2,
    ) -> None:
        caller = AudioFormat(Encoding.L16, start.caller_audio.sample_rate)
        agent = AudioFormat(Encoding.L16, start.agent_audio.sample_rate)
        self._bytes_per_ms = caller.sample_rate * 2 // 1000
        self._out_frame = agent.bytes_per_frame(FRAME_MS)
        self._out_bytes_per_ms = agent.sample_rate * 2 // 1000
        self._lead = lead_ms * self._out_bytes_per_ms
        self._pre_roll_ms = pre_roll_ms
        self._max_utterance_ms = max_utterance_ms
        self._rates = (caller.sample_rate, agent.sample_rate)
        vad_rate = caller.sample_rate if caller.sample_rate in VAD_RATES else 16000
        self._vad = VoiceActivityDetector(
            vad_rate, FRAME_MS, vad_aggressiveness, _START_FRAMES, _END_FRAMES
        )
        self._vad_resampler = (
            Resampler(caller.sample_rate, vad_rate) if vad_rate != caller.sample_rate else None
        )
        self._framer = Framer(caller)
        self._history = bytearray()  # recent caller audio, from stream time _history_ms
        self._history_ms = 0
        self._time_ms = 0
        self._utterance_ms: int | None = None  # stream time the current utterance starts
        self._playback: deque[bytes | Mark] = deque()
        self._credit = 0  # agent audio bytes we may send before the caller's clock allows
        self._keys = ""
        self._done = False
        self._stats = EchoStats()

    def stats(self) -> EchoStats:
        """A copy of the call's counters."""
        return replace(self._stats)

    @property
    def buffered_ms(self) -> int:
        """Caller audio held now, ms (pre-roll window, or the utterance so far)."""
        return len(self._history) // self._bytes_per_ms

    # -- AgentCore -----------------------------------------------------------------------

    def receive_audio(self, pcm: bytes) -> list[AgentItem]:
        """Take caller audio; return the transcript lines, audio and marks due now."""
        if self._done:
            return []
        out: list[AgentItem] = []
        for frame in self._framer.push(pcm):
            out += self._on_frame(frame)
        return out

    def receive_message(self, message: GatewayMessage) -> list[AgentItem]:
        """Take a gateway message; return the answer, if any."""
        if self._done:
            return []
        stats = self._stats
        if isinstance(message, BargeIn):
            stats.barge_ins += 1
            self._playback.clear()
            self._credit = 0
        elif isinstance(message, MarkPlayed):
            stats.marks_played += 1
        elif isinstance(message, MarkCleared):
            stats.marks_cleared += 1
        elif isinstance(message, Dtmf):
            return self._on_keys(message.digits)
        elif isinstance(message, DurationWarning):
            return [Transcript(role="agent", text=f"<{message.seconds_left} s left>")]
        elif isinstance(message, Error):
            stats.errors += 1
        elif isinstance(message, Stop):
            stats.stop_reason = message.reason
            self._finish()
        return []  # speech_started/speech_ended: this agent runs its own VAD

    # -- caller audio ----------------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> list[AgentItem]:
        self._stats.caller_frames += 1
        self._history += frame
        self._time_ms += FRAME_MS
        vad_frame = self._vad_resampler.process(frame) if self._vad_resampler else frame
        event = self._vad.process(vad_frame)
        out: list[AgentItem] = []
        if isinstance(event, SpeechStarted):
            self._utterance_ms = max(event.start_ms - self._pre_roll_ms, self._history_ms)
        elif isinstance(event, SpeechEnded):
            out += self._utterance_ended(event.end_ms)
        elif (
            self._utterance_ms is not None
            and self._time_ms - self._utterance_ms >= self._max_utterance_ms
        ):
            out += self._utterance_ended(self._time_ms)
            self._utterance_ms = self._time_ms  # still speaking: the next piece starts here
        self._trim()
        out += self._play(self._out_frame)
        return out

    def _utterance_ended(self, end_ms: int) -> list[AgentItem]:
        start_ms, self._utterance_ms = self._utterance_ms, None
        if start_ms is None or end_ms <= start_ms:
            return []
        lo = (start_ms - self._history_ms) * self._bytes_per_ms
        hi = (end_ms - self._history_ms) * self._bytes_per_ms
        pcm = bytes(self._history[lo:hi])
        if self._rates[0] != self._rates[1]:
            resampler = Resampler(*self._rates)
            pcm = resampler.process(pcm) + resampler.flush()
        self._stats.utterances += 1
        n = self._stats.utterances
        if not self._playback:
            self._credit = self._lead
        size = self._out_frame
        self._playback.extend(pcm[i : i + size] for i in range(0, len(pcm), size))
        self._playback.append(Mark(name=f"utt-{n}"))
        return [Transcript(role="agent", text=f"<echo of utterance {n}, {end_ms - start_ms} ms>")]

    def _trim(self) -> None:
        """Forget caller audio no utterance can need any more (bounded memory)."""
        if self._utterance_ms is not None:
            keep_from = self._utterance_ms
        else:
            keep_from = self._time_ms - self._pre_roll_ms - _START_FRAMES * FRAME_MS
        if keep_from > self._history_ms:
            del self._history[: (keep_from - self._history_ms) * self._bytes_per_ms]
            self._history_ms = keep_from

    def _play(self, allowance: int) -> list[AgentItem]:
        """Send what the caller's clock allows: ``allowance`` more bytes, marks for free."""
        if not self._playback:
            return []
        self._credit += allowance
        out: list[AgentItem] = []
        chunks: list[bytes] = []
        while self._playback:
            head = self._playback[0]
            if isinstance(head, Mark):
                if chunks:
                    out.append(b"".join(chunks))
                    chunks = []
                out.append(head)
                self._stats.marks_sent += 1
            elif len(head) <= self._credit:
                self._credit -= len(head)
                chunks.append(head)
                self._stats.echoed_ms += len(head) // self._out_bytes_per_ms
            else:
                break
            self._playback.popleft()
        if chunks:
            out.append(b"".join(chunks))
        if not self._playback:
            self._credit = 0
        return out

    # -- keys and the end ----------------------------------------------------------------

    def _on_keys(self, digits: str) -> list[AgentItem]:
        out: list[AgentItem] = []
        for key in digits:
            self._stats.dtmf_digits += 1
            if key == HANGUP_KEY:
                self._finish()
                return [*out, Hangup(reason="caller_requested")]
            if key == PLAYBACK_KEY:
                if self._keys:
                    out.append(Dtmf(digits=self._keys))
                    self._keys = ""
            else:
                self._keys = (self._keys + key)[-_MAX_KEYS:]
            out.append(Transcript(role="agent", text=f"<dtmf {key}>"))
        return out

    def _finish(self) -> None:
        self._done = True
        self._playback.clear()
        self._history.clear()
