"""Voice activity detection: WebRTC's VAD per frame, smoothed into speech start/end events.

``webrtcvad`` (the maintained ``webrtcvad-wheels`` build of Google's WebRTC VAD) classifies
one frame at a time: 10, 20 or 30 ms of PCM16 at 8, 16, 32 or 48 kHz. Single frames flip
on breaths and clicks, so :class:`VoiceActivityDetector` adds hangover: speech starts
after ``start_frames`` speech frames in a row and ends after ``end_frames`` non-speech
frames in a row. It is sans-clock: times are stream offsets in ms, counted from the
frames fed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import _webrtcvad

from rymi_codecs.errors import InvalidAudioError, InvalidSettingError, UnsupportedFormatError
from rymi_codecs.pcm import Buffer, check_pcm16

__all__ = [
    "VAD_FRAME_MS",
    "VAD_RATES",
    "SpeechEnded",
    "SpeechStarted",
    "VadEvent",
    "VoiceActivityDetector",
]

VAD_RATES = (8000, 16000, 32000, 48000)
"""Sample rates (Hz) WebRTC's VAD accepts."""

VAD_FRAME_MS = (10, 20, 30)
"""Frame durations (ms) WebRTC's VAD accepts."""

_webrtc_process = _webrtcvad.process


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began."""

    start_ms: int
    """Stream time where the speech began: the start of the first of the speech frames."""
    detected_ms: int
    """Stream time at which it was decided: the end of the frame that confirmed it."""


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Speech ended."""

    end_ms: int
    """Stream time where the speech ended: the end of the last speech frame."""
    detected_ms: int
    """Stream time at which it was decided: the end of the frame that confirmed it."""


VadEvent = SpeechStarted | SpeechEnded
"""What :meth:`VoiceActivityDetector.process` may return."""


class VoiceActivityDetector:
    """One caller's VAD with hangover smoothing.

    Args:
        sample_rate: PCM16 rate, Hz: 8000, 16000, 32000 or 48000.
        frame_ms: frame duration, ms: 10, 20 or 30.
        aggressiveness: WebRTC VAD mode, 0 (most speech kept) to 3 (most noise rejected).
        start_frames: speech frames in a row that start speech (>= 1).
        end_frames: non-speech frames in a row that end it (>= 1).

    Raises:
        UnsupportedFormatError: a rate or frame duration WebRTC's VAD does not accept.
        InvalidSettingError: aggressiveness outside 0-3 or a frame count below 1.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_ms: int = 20,
        aggressiveness: int = 2,
        start_frames: int = 3,
        end_frames: int = 15,
    ) -> None:
        _check_vad_format(sample_rate, frame_ms)
        if isinstance(aggressiveness, bool) or aggressiveness not in (0, 1, 2, 3):
            raise InvalidSettingError(
                f"expected VAD aggressiveness 0, 1, 2 or 3, got {aggressiveness!r}"
            )
        for name, count in (("start_frames", start_frames), ("end_frames", end_frames)):
            if count < 1:
                raise InvalidSettingError(f"expected {name} >= 1, got {count}")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        """Size of the frames :meth:`process` accepts, in bytes."""
        self._samples = self.frame_bytes // 2
        # webrtcvad's C module, as its ``Vad`` class drives it (create, init, set_mode,
        # process), without that Python wrapper: one C call per frame.
        self._handle = _webrtcvad.create()
        _webrtcvad.init(self._handle)
        _webrtcvad.set_mode(self._handle, aggressiveness)
        self._start_frames = start_frames
        self._end_frames = end_frames
        self.reset()

    @property
    def speaking(self) -> bool:
        """Whether the smoothed state is "speech"."""
        return self._speaking

    @property
    def time_ms(self) -> int:
        """Stream time after the frames fed so far, ms."""
        return self._frames * self.frame_ms

    def reset(self) -> None:
        """Start a new stream: silence, time 0."""
        self._speaking = False
        self._frames = 0
        self._run = 0  # frames in a row that disagree with the smoothed state

    def is_speech(self, frame: Buffer) -> bool:
        """Raw WebRTC decision for one frame, without smoothing or bookkeeping.

        Raises:
            InvalidAudioError: ``frame`` is not exactly :attr:`frame_bytes` of PCM16.
        """
        if type(frame) is not bytes or len(frame) != self.frame_bytes:
            frame = self._checked(frame)
        return bool(_webrtc_process(self._handle, self.sample_rate, frame, self._samples))

    def process(self, frame: Buffer) -> VadEvent | None:
        """Feed one frame; return the transition it completes, if any.

        Raises:
            InvalidAudioError: ``frame`` is not exactly :attr:`frame_bytes` of PCM16.
        """
        if type(frame) is bytes and len(frame) == self.frame_bytes:
            # webrtcvad's C function itself, not its Python wrapper (the wrapper only
            # recomputes the length given here and calls the same function).
            voiced = _webrtc_process(self._handle, self.sample_rate, frame, self._samples)
        else:
            voiced = self.is_speech(frame)
        self._frames += 1
        if voiced == self._speaking:  # most frames: the state holds
            self._run = 0
            return None
        self._run += 1
        if self._speaking and self._run >= self._end_frames:
            self._speaking, self._run = False, 0
            return SpeechEnded(self.time_ms - self._end_frames * self.frame_ms, self.time_ms)
        if not self._speaking and self._run >= self._start_frames:
            self._speaking, self._run = True, 0
            return SpeechStarted(self.time_ms - self._start_frames * self.frame_ms, self.time_ms)
        return None

    def _checked(self, frame: Buffer) -> bytes:
        """``frame`` as bytes if it is exactly one frame of PCM16, else raise."""
        buf = check_pcm16(frame)
        if len(buf) != self.frame_bytes:
            raise InvalidAudioError(
                f"expected a {self.frame_ms} ms PCM16 frame at {self.sample_rate} Hz "
                f"({self.frame_bytes} bytes), got {len(buf)} bytes"
            )
        return bytes(buf)

    def finish(self) -> SpeechEnded | None:
        """End the stream: close an open speech segment at the current time, and reset."""
        event = SpeechEnded(self.time_ms, self.time_ms) if self._speaking else None
        self.reset()
        return event


def _check_vad_format(sample_rate: int, frame_ms: int) -> None:
    if sample_rate not in VAD_RATES:
        raise UnsupportedFormatError(
            f"VAD sample rate {sample_rate} Hz is not supported; "
            f"expected one of {', '.join(map(str, VAD_RATES))} Hz"
        )
    if frame_ms not in VAD_FRAME_MS:
        raise UnsupportedFormatError(
            f"VAD frame duration {frame_ms} ms is not supported; "
            f"expected one of {', '.join(map(str, VAD_FRAME_MS))} ms"
        )
