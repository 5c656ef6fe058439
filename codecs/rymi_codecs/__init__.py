"""rymi_codecs: the pure audio library every call runs through (lives in the codecs/ folder).

Nothing here imports asyncio or does I/O; every function is synchronous and raises a
:class:`CodecError` subclass with a message naming what was expected.

Modules: ``format`` (AudioFormat), ``g711`` (μ-law/A-law ⇄ PCM16), ``resample`` (streaming
polyphase resampler), ``framing`` (exact 20 ms frames), ``vad`` (WebRTC VAD with hangover),
``levels`` (dBFS, silence), ``pipeline`` (the per-call chains). See docs/codecs.md.
"""

from rymi_codecs.errors import (
    CodecError,
    InvalidAudioError,
    InvalidSettingError,
    UnsupportedFormatError,
)
from rymi_codecs.format import (
    ALAW_8K,
    FRAME_MS,
    L16_8K,
    L16_16K,
    L16_24K,
    L16_48K,
    MULAW_8K,
    SUPPORTED_RATES,
    AudioFormat,
    Encoding,
)
from rymi_codecs.framing import Framer
from rymi_codecs.g711 import decode, decode_alaw, decode_mulaw, encode, encode_alaw, encode_mulaw
from rymi_codecs.levels import SILENCE_BYTE, rms_dbfs, silence, silence_samples
from rymi_codecs.pipeline import AgentToCaller, CallerToAgent
from rymi_codecs.resample import FilterDesign, Resampler
from rymi_codecs.vad import SpeechEnded, SpeechStarted, VadEvent, VoiceActivityDetector

__all__ = [
    "ALAW_8K",
    "FRAME_MS",
    "L16_8K",
    "L16_16K",
    "L16_24K",
    "L16_48K",
    "MULAW_8K",
    "SILENCE_BYTE",
    "SUPPORTED_RATES",
    "AgentToCaller",
    "AudioFormat",
    "CallerToAgent",
    "CodecError",
    "Encoding",
    "FilterDesign",
    "Framer",
    "InvalidAudioError",
    "InvalidSettingError",
    "Resampler",
    "SpeechEnded",
    "SpeechStarted",
    "UnsupportedFormatError",
    "VadEvent",
    "VoiceActivityDetector",
    "decode",
    "decode_alaw",
    "decode_mulaw",
    "encode",
    "encode_alaw",
    "encode_mulaw",
    "rms_dbfs",
    "silence",
    "silence_samples",
]
