"""Per-call, per-direction audio chains: the caller's audio to the agent and back.

The call engine owns one of each per call::

    caller → agent   CallerToAgent:  decode (G.711/L16) → resample to the agent rate
                                     (+ optional VAD on the way, as speech events)
    agent → caller   AgentToCaller:  resample to the carrier rate → encode → exact frames

Both are plain synchronous objects with no clock: bytes in, bytes (or frames) out. The
gateway calls ``process`` once per 20 ms frame and direction, so the per-frame path is
kept short: the codec functions are chosen once, and a frame that is exactly one VAD or
carrier frame (the usual case) passes the framers without being buffered.
"""

from __future__ import annotations

from rymi_codecs.errors import UnsupportedFormatError
from rymi_codecs.format import FRAME_MS, AudioFormat, Encoding
from rymi_codecs.framing import Framer
from rymi_codecs.g711 import decoder, encoder, sample_codec
from rymi_codecs.pcm import Buffer
from rymi_codecs.resample import Resampler
from rymi_codecs.vad import VAD_RATES, VadEvent, VoiceActivityDetector

__all__ = ["AgentToCaller", "CallerToAgent"]


class CallerToAgent:
    """Caller audio in the carrier's format → PCM16 at the agent's rate.

    Args:
        carrier: the carrier stream's format (e.g. ``MULAW_8K``, ``L16_16K``).
        agent_rate: PCM16 rate the agent wants, Hz.
        vad: a detector to run on the caller's audio, or ``None``. It runs at its own
            :attr:`~VoiceActivityDetector.sample_rate`, which must be the carrier's or the
            agent's rate (the lower one costs less; WebRTC's VAD works at 8 kHz inside).

    Raises:
        UnsupportedFormatError: an unsupported agent rate, or a VAD rate that is neither.
    """

    def __init__(
        self, carrier: AudioFormat, agent_rate: int, vad: VoiceActivityDetector | None = None
    ) -> None:
        self.carrier = carrier
        self.agent = AudioFormat(Encoding.L16, agent_rate)
        self._decode = decoder(carrier.encoding)
        self._decode_bytes = sample_codec(carrier.encoding, encode=False)
        self._resampler = Resampler(carrier.sample_rate, agent_rate)
        self._resample_bytes = self._resampler.bytes_kernel()
        self._vad = vad
        self._vad_after = False
        self._vad_framer: Framer | None = None
        self.events: list[VadEvent] = []
        """VAD transitions found and not yet taken by :meth:`events_received` (read it to
        skip that call when it is empty, the per-frame case)."""
        if vad is not None:
            if vad.sample_rate not in (carrier.sample_rate, agent_rate):
                raise UnsupportedFormatError(
                    f"VAD at {vad.sample_rate} Hz cannot run on a {carrier} → {self.agent} "
                    f"chain; expected {carrier.sample_rate} or {agent_rate} Hz "
                    f"(of {', '.join(map(str, VAD_RATES))})"
                )
            self._vad_after = vad.sample_rate != carrier.sample_rate
            self._vad_framer = Framer(AudioFormat(Encoding.L16, vad.sample_rate), vad.frame_ms)

    def process(self, payload: Buffer) -> bytes:
        """Decode and resample one carrier payload; returns PCM16 at the agent rate.

        VAD transitions found on the way are kept for :meth:`events_received`.

        Raises:
            InvalidAudioError: ``payload`` is not whole samples of the carrier's format.
        """
        # The per-frame case in C calls only: bytes from the carrier adapter go straight to
        # audioop (any length) or, for L16, through when whole samples; the codec's output
        # is whole samples, so the resampler's kernel takes it unchecked.
        decode = self._decode_bytes
        if type(payload) is not bytes:
            pcm = self._decode(payload)
        elif decode is not None:
            pcm = decode(payload, 2)
        elif len(payload) & 1:
            pcm = self._decode(payload)  # raises the typed error
        else:
            pcm = payload
        resample = self._resample_bytes
        out = pcm if resample is None else resample(pcm)
        vad, framer = self._vad, self._vad_framer
        if vad is not None and framer is not None:
            heard = out if self._vad_after else pcm
            if not framer.held and len(heard) == framer.frame_bytes:
                event = vad.process(heard)  # one VAD frame: no framing to do
                if event is not None:
                    self.events.append(event)
            else:
                self._detect(heard)
        return out

    def flush(self) -> bytes:
        """End of the call: the resampler's tail, and the VAD's closing event, if any."""
        out = self._resampler.flush()
        if self._vad is not None and self._vad_framer is not None:
            self._detect(out if self._vad_after else b"")
            self._vad_framer.reset()
            event = self._vad.finish()
            if event is not None:
                self.events.append(event)
        return out

    def events_received(self) -> list[VadEvent]:
        """Return and forget the VAD transitions found since the last call."""
        events, self.events = self.events, []
        return events

    def _detect(self, pcm: bytes) -> None:
        vad, framer = self._vad, self._vad_framer
        if vad is None or framer is None:
            return
        # (Framer.push hands an exact frame straight back when it holds nothing.)
        for frame in framer.push(pcm):
            event = vad.process(frame)
            if event is not None:
                self.events.append(event)


class AgentToCaller:
    """Agent PCM16 at the agent's rate → exact 20 ms frames in the carrier's format.

    Args:
        agent_rate: PCM16 rate the agent sends, Hz.
        carrier: the carrier stream's format.
        frame_ms: frame duration toward the carrier, ms.

    Raises:
        UnsupportedFormatError: an unsupported rate or frame duration.
    """

    def __init__(self, agent_rate: int, carrier: AudioFormat, frame_ms: int = FRAME_MS) -> None:
        self.agent = AudioFormat(Encoding.L16, agent_rate)
        self.carrier = carrier
        self._resampler = Resampler(agent_rate, carrier.sample_rate)
        self._resample_bytes = self._resampler.bytes_kernel()
        self._encode = encoder(carrier.encoding)
        self._encode_bytes = sample_codec(carrier.encoding, encode=True)
        self._framer = Framer(carrier, frame_ms)

    def process(self, pcm: Buffer) -> list[bytes]:
        """Resample and encode agent audio; return the carrier frames now complete.

        Raises:
            InvalidAudioError: ``pcm`` is not whole PCM16 samples.
        """
        if type(pcm) is not bytes or len(pcm) & 1:
            return self._framer.push(self._encode(self._resampler.process(pcm)))
        # Whole samples in bytes (the per-frame case): C calls only, as in CallerToAgent.
        resample, encode, framer = self._resample_bytes, self._encode_bytes, self._framer
        out = pcm if resample is None else resample(pcm)
        if encode is not None:
            out = encode(out, 2)
        if not framer.held and len(out) == framer.frame_bytes:
            return [out]
        return framer.push(out)

    def flush(self, pad: bool = True) -> list[bytes]:
        """End of the agent's turn or of the call: the remaining audio as frames.

        Args:
            pad: pad the last frame with silence to the full frame size.
        """
        tail = self._encode(self._resampler.flush())
        return self._framer.push(tail) + self._framer.flush(pad)

    def clear(self) -> None:
        """Barge-in: drop the audio held in the resampler and the framer."""
        self._resampler.reset()
        self._framer.reset()
