"""G.711 μ-law and A-law (ITU-T G.711) ⇄ PCM16 little-endian, one byte per sample.

The conversions run in ``audioop``'s C code: the standard library's up to Python 3.12 and
the ``audioop-lts`` port (same C source) from 3.13, where PEP 594 removed it. On this
project's machines it measured about 0.1 µs to decode a 20 ms frame and, to encode one,
0.3 µs on silence, 0.9 µs on speech and 1.6 µs on loud band-limited noise (the encoder
searches each sample's segment, and its branches mispredict most on busy audio). A numpy
lookup table (``table.take``) costs 0.95 µs on any audio, so it would only win on noise.

The checks on the input are written for the per-frame case: ``bytes`` (what the other
steps return) goes straight to ``audioop``; anything else goes through :mod:`.pcm`'s checks.

``audioop`` works in the host's byte order; every platform the gateway runs on (x86-64,
arm64) is little-endian, which the import below checks.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

from rymi_codecs.errors import UnsupportedFormatError
from rymi_codecs.format import Encoding
from rymi_codecs.pcm import Buffer, check_buffer, check_pcm16

with warnings.catch_warnings():
    # PEP 594 deprecates audioop (removed in 3.13, where audioop-lts provides it without a
    # warning). Python 3.11 and 3.12 warn on import; the test suite turns warnings into errors.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

if sys.byteorder != "little":  # pragma: no cover - no big-endian host to run on
    raise ImportError("rymi_codecs needs a little-endian host: audioop works in native order")

__all__ = [
    "decode",
    "decode_alaw",
    "decode_mulaw",
    "decoder",
    "encode",
    "encode_alaw",
    "encode_mulaw",
    "encoder",
    "sample_codec",
]

Codec = Callable[[Buffer], bytes]
"""One direction of one encoding: :func:`decode_mulaw`, :func:`encode_alaw`..."""
SampleCodec = Callable[[bytes, int], bytes]
"""``audioop``'s own conversion, called as ``f(data, 2)`` (see :func:`sample_codec`)."""


def decode_mulaw(data: Buffer) -> bytes:
    """Decode G.711 μ-law bytes to PCM16 LE (twice as many bytes).

    Raises:
        InvalidAudioError: ``data`` is not bytes-like.
    """
    return audioop.ulaw2lin(data if type(data) is bytes else check_buffer(data, "μ-law audio"), 2)


def decode_alaw(data: Buffer) -> bytes:
    """Decode G.711 A-law bytes to PCM16 LE (twice as many bytes).

    Raises:
        InvalidAudioError: ``data`` is not bytes-like.
    """
    return audioop.alaw2lin(data if type(data) is bytes else check_buffer(data, "A-law audio"), 2)


def encode_mulaw(pcm: Buffer) -> bytes:
    """Encode PCM16 LE to G.711 μ-law (half as many bytes).

    Raises:
        InvalidAudioError: ``pcm`` is not bytes-like or has an odd byte count.
    """
    if type(pcm) is not bytes or len(pcm) % 2:
        pcm = check_pcm16(pcm)
    return audioop.lin2ulaw(pcm, 2)


def encode_alaw(pcm: Buffer) -> bytes:
    """Encode PCM16 LE to G.711 A-law (half as many bytes).

    Raises:
        InvalidAudioError: ``pcm`` is not bytes-like or has an odd byte count.
    """
    if type(pcm) is not bytes or len(pcm) % 2:
        pcm = check_pcm16(pcm)
    return audioop.lin2alaw(pcm, 2)


def decode(data: Buffer, encoding: Encoding) -> bytes:
    """Decode ``data`` in ``encoding`` to PCM16 LE (L16 is checked and passed through).

    Raises:
        InvalidAudioError: ``data`` is not bytes-like, or is L16 with an odd byte count.
        UnsupportedFormatError: ``encoding`` is not an :class:`Encoding`.
    """
    return decoder(encoding)(data)


def encode(pcm: Buffer, encoding: Encoding) -> bytes:
    """Encode PCM16 LE ``pcm`` to ``encoding`` (L16 is checked and passed through).

    Raises:
        InvalidAudioError: ``pcm`` is not bytes-like or has an odd byte count.
        UnsupportedFormatError: ``encoding`` is not an :class:`Encoding`.
    """
    return encoder(encoding)(pcm)


def decoder(encoding: Encoding) -> Codec:
    """The function :func:`decode` calls for ``encoding``: chosen once for a stream.

    Raises:
        UnsupportedFormatError: ``encoding`` is not an :class:`Encoding`.
    """
    if encoding is Encoding.MULAW:
        return decode_mulaw
    if encoding is Encoding.ALAW:
        return decode_alaw
    if encoding is Encoding.L16:
        return _l16
    raise UnsupportedFormatError(_unknown(encoding))


def encoder(encoding: Encoding) -> Codec:
    """The function :func:`encode` calls for ``encoding``: chosen once for a stream.

    Raises:
        UnsupportedFormatError: ``encoding`` is not an :class:`Encoding`.
    """
    if encoding is Encoding.MULAW:
        return encode_mulaw
    if encoding is Encoding.ALAW:
        return encode_alaw
    if encoding is Encoding.L16:
        return _l16
    raise UnsupportedFormatError(_unknown(encoding))


def _l16(pcm: Buffer) -> bytes:
    """L16 both ways: the bytes, checked to be whole samples."""
    return pcm if type(pcm) is bytes and not len(pcm) % 2 else bytes(check_pcm16(pcm))


def _unknown(encoding: object) -> str:
    return f"expected an Encoding ({', '.join(e.value for e in Encoding)}), got {encoding!r}"


def sample_codec(encoding: Encoding, *, encode: bool) -> SampleCodec | None:
    """``audioop``'s own function for one direction of ``encoding``; None for L16.

    For the per-frame chains, which call it as ``f(data, 2)`` on ``bytes`` they know to be
    valid (any length to decode, whole PCM16 samples to encode): one C call and no Python
    frame. Anything else goes through :func:`decoder` / :func:`encoder` and their checks.

    Raises:
        UnsupportedFormatError: ``encoding`` is not an :class:`Encoding`.
    """
    if encoding is Encoding.MULAW:
        return audioop.lin2ulaw if encode else audioop.ulaw2lin
    if encoding is Encoding.ALAW:
        return audioop.lin2alaw if encode else audioop.alaw2lin
    if encoding is Encoding.L16:
        return None
    raise UnsupportedFormatError(_unknown(encoding))
