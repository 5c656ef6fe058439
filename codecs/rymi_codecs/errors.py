"""Errors raised by rymi_codecs.

::

    CodecError (ValueError)
    ├── UnsupportedFormatError   an encoding, sample rate, channel count or frame length we don't do
    ├── InvalidAudioError        bytes that don't fit the format (odd length, wrong frame size)
    └── InvalidSettingError      a setting out of range (VAD aggressiveness, frame counts)

Every message names what was expected, so that a caller can tell a wrong format from
wrong data without reading this library.
"""

from __future__ import annotations

__all__ = ["CodecError", "InvalidAudioError", "InvalidSettingError", "UnsupportedFormatError"]


class CodecError(ValueError):
    """Root of the errors raised by rymi_codecs."""


class UnsupportedFormatError(CodecError):
    """The encoding, rate, channel count or frame duration is not one we support."""


class InvalidAudioError(CodecError):
    """The audio bytes do not fit the format they claim (length, alignment, frame size)."""


class InvalidSettingError(CodecError):
    """A setting is out of its allowed range (VAD aggressiveness, hangover frame counts)."""
