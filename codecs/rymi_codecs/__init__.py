"""rymi_codecs: the pure audio library every call runs through (lives in the codecs/ folder).

Nothing here imports asyncio or does I/O; every function is synchronous and raises a
:class:`CodecError` subclass with a message naming what was expected.
"""

from rymi_codecs.errors import CodecError, InvalidAudioError, UnsupportedFormatError
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

__all__ = [
    "ALAW_8K",
    "FRAME_MS",
    "L16_8K",
    "L16_16K",
    "L16_24K",
    "L16_48K",
    "MULAW_8K",
    "SUPPORTED_RATES",
    "AudioFormat",
    "CodecError",
    "Encoding",
    "InvalidAudioError",
    "UnsupportedFormatError",
]
