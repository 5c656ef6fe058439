"""What a carrier's media socket tells us (events) and what we tell it (commands).

Every adapter turns its carrier's wire messages into these frozen values and turns
these commands into its carrier's wire messages, so the call session never sees a
carrier-specific shape. Audio payloads are kept out of ``repr`` (they are large and
they are the caller's voice).

Clear semantics are the same on every carrier: each :class:`ClearPlayback` is answered
by exactly one :class:`PlaybackCleared`, which names the marks that were still pending
when the clear was sent; those marks never produce a :class:`MarkPlayed`. The carriers
differ underneath (Twilio echoes pending marks on ``clear``; Plivo drops pending
checkpoints on ``clearAudio``; see docs/carriers.md), and the adapters hide that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rymi_codecs import AudioFormat

__all__ = [
    "AudioReceived",
    "ClearPlayback",
    "Command",
    "DtmfReceived",
    "Event",
    "Mark",
    "MarkPlayed",
    "PlayAudio",
    "PlaybackCleared",
    "SendDtmf",
    "StreamStarted",
    "StreamStopped",
]


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The carrier opened the media stream and told us what it carries."""

    stream_id: str
    """The carrier's stream id (Twilio ``streamSid``, Plivo ``streamId``; "" on Vonage)."""
    call_id: str
    """The carrier's call id (``callSid``, ``callId``; Vonage: the ``call_uuid`` header)."""
    audio_format: AudioFormat
    """Encoding and rate of the audio in both directions on this socket."""
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    """What our answer document attached (TwiML ``<Parameter>``, Plivo ``extraHeaders``,
    Vonage ``headers``), as strings."""
    account_id: str | None = None
    """The carrier account the stream belongs to, when the carrier says (Twilio, Plivo)."""


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """One chunk of caller audio, still in the carrier's wire encoding."""

    payload: bytes = field(repr=False)
    """Raw audio bytes (no container header), in :attr:`audio_format`."""
    audio_format: AudioFormat
    """Encoding and rate of :attr:`payload`."""
    timestamp_ms: int | None = None
    """The carrier's timestamp in ms (Twilio: since stream start; Plivo: Unix epoch)."""
    sequence: int | None = None
    """The carrier's message sequence number, when it sends one."""


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The caller pressed a key."""

    digit: str
    """One of ``0-9 * # A-D``."""
    duration_ms: int | None = None
    """How long the key was held, when the carrier says (Vonage)."""


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """All audio sent before the mark of this name has been played to the caller."""

    name: str


@dataclass(frozen=True, slots=True)
class PlaybackCleared:
    """The carrier emptied its playback buffer in answer to a :class:`ClearPlayback`."""

    cancelled_marks: tuple[str, ...] = ()
    """Marks pending when the clear was sent; they were not (fully) played."""


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The media stream ended; nothing more will come on this socket."""

    reason: str
    """``"stop"`` (the carrier said so) or ``"closed"`` (the socket closed first)."""


Event = StreamStarted | AudioReceived | DtmfReceived | MarkPlayed | PlaybackCleared | StreamStopped
"""Anything a media stream parser yields."""


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Queue audio for the caller: whole 20 ms frames in the stream's wire format."""

    payload: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Mark:
    """Ask to be told (:class:`MarkPlayed`) once the audio queued before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    """Drop all queued audio now (barge-in); answered by :class:`PlaybackCleared`."""


@dataclass(frozen=True, slots=True)
class SendDtmf:
    """Play DTMF digits into the call (only where the carrier's socket supports it)."""

    digits: str


Command = PlayAudio | Mark | ClearPlayback | SendDtmf
"""Anything a media stream turns into wire messages."""
