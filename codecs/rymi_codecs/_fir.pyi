"""Type stub of the C extension built from _fir.c (see rymi_codecs._compiled)."""

from collections.abc import Sequence

from rymi_codecs.pcm import Buffer

class Filter:
    """Streaming integer polyphase FIR: the compiled kernel of rymi_codecs.resample."""

    def __init__(self, taps: Sequence[int], up: int, down: int) -> None: ...
    def process(self, chunk: Buffer) -> bytes:
        """Filter PCM16 LE samples (an even byte count); return the outputs now complete."""

    def reset(self) -> None:
        """Forget the stream: history back to silence, totals to 0."""

    @property
    def in_total(self) -> int:
        """Input samples since the last reset."""

    @property
    def out_total(self) -> int:
        """Output samples since the last reset."""
