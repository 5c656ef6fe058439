"""PCM16 helpers shared by the other modules: input checks and bytes → int16 views.

All linear audio in rymi_codecs is signed 16-bit little-endian PCM ("L16" in carrier
documents), mono.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rymi_codecs.errors import InvalidAudioError

__all__ = ["PCM16", "Buffer", "check_buffer", "check_pcm16", "pcm16_samples"]

Buffer = bytes | bytearray | memoryview
"""Any bytes-like object holding audio."""

PCM16 = np.dtype("<i2")
"""numpy dtype of one L16 sample (signed 16-bit, little-endian)."""

_BYTES_LIKE = (bytes, bytearray)  # a tuple: ``bytes | bytearray`` would be rebuilt per call


def check_buffer(data: object, what: str = "audio") -> Buffer:
    """Return ``data`` as a flat byte buffer if it is bytes-like, else raise.

    A memoryview is cast to unsigned bytes so that ``len()`` counts bytes, not items.

    Args:
        data: the value to check.
        what: how to name the value in the error message.

    Raises:
        InvalidAudioError: ``data`` is not bytes, bytearray or a contiguous memoryview.
    """
    if isinstance(data, _BYTES_LIKE):
        return data
    if isinstance(data, memoryview):
        if not data.c_contiguous:
            raise InvalidAudioError(f"expected {what} in a contiguous memoryview")
        return data.cast("B")
    raise InvalidAudioError(
        f"expected {what} as bytes, bytearray or memoryview, got {type(data).__name__}"
    )


def check_pcm16(data: object) -> Buffer:
    """Return ``data`` as a byte buffer if it is whole PCM16 samples, else raise.

    Raises:
        InvalidAudioError: ``data`` is not bytes-like or not a whole number of samples.
    """
    buf = check_buffer(data, "PCM16 audio")
    if len(buf) % 2:
        raise InvalidAudioError(
            f"expected PCM16 audio (2 bytes per sample, an even byte count), got {len(buf)} bytes"
        )
    return buf


def pcm16_samples(data: object) -> npt.NDArray[np.int16]:
    """View PCM16 LE bytes as an int16 array (no copy).

    Raises:
        InvalidAudioError: ``data`` is not bytes-like or not a whole number of samples.
    """
    return np.frombuffer(check_pcm16(data), dtype=PCM16)
