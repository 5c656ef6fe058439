"""Stateful streaming resampling of PCM16 between 8, 16, 24 and 48 kHz.

One :class:`Resampler` per stream and direction. It is a polyphase FIR: the rate change
``out/in = L/M`` (in lowest terms) is an upsampling by ``L``, a low-pass filter at the
upsampled rate ``F = L * in_rate``, and a downsampling by ``M``, computed without ever
building the zero-stuffed signal: each output sample is a dot product of a short run of
input samples with one of the ``L`` sub-filters ("phases").

Design choices, and why (measured figures are in docs/codecs.md and docs/performance.md):

* **Low delay first.** This sits in a live phone call, in both directions. The filter is a
  linear-phase Kaiser-windowed sinc whose length is set by the Kaiser formula from the
  transition band, so its delay depends only on that band's width in hertz. The passband
  ends at 42.5 % of the lower rate (3.4 kHz at 8 kHz, the top of the G.712 telephone
  band) and the stopband starts at the mirror image of that edge (4.6 kHz at 8 kHz).
  Anything that aliases can then only land above the passband, and the filter holds
  back about 1.7 ms of audio (0.56-0.85 ms when both rates are 16 kHz or more). soxr's
  HQ/VHQ modes held back 62 ms on average (up to 114 ms) in 20 ms streaming and returned
  nothing from four calls in five; soxr "QQ" and ``audioop.ratecv`` let aliases through
  at full level.
* **Bit-identical streaming.** The taps are rounded to multiples of 2**-TAP_BITS and the
  samples are integers, so every product and every partial sum is an exact multiple of
  2**-TAP_BITS below 2**21: exact in float64's 53-bit mantissa. The result therefore
  does not depend on the order BLAS sums in, nor on how the stream was cut into chunks:
  feeding a stream 20 ms at a time, 7 samples at a time or in one piece gives the same
  bytes.
* **One matrix product per chunk.** Every ``M`` input samples yield exactly ``L`` output
  samples, and those ``L`` outputs depend on one window of ``K + M - 1`` inputs. A chunk
  of ``B`` such blocks is a ``(B, K + M - 1) @ (K + M - 1, L)`` product over a strided
  view of the input history: no Python loop per sample, and the history lives in a
  preallocated buffer.

A 20 ms frame at any supported rate is a whole number of blocks, so a 20 ms frame in
always gives exactly 20 ms out. Other chunk sizes hold back fewer than ``M`` input samples
until the next call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from rymi_codecs.errors import UnsupportedFormatError
from rymi_codecs.format import SUPPORTED_RATES
from rymi_codecs.pcm import PCM16, Buffer, pcm16_samples

__all__ = ["PASSBAND_FRACTION", "STOPBAND_DB", "TAP_BITS", "FilterDesign", "Resampler"]

PASSBAND_FRACTION = 0.425
"""Passband edge as a fraction of the lower of the two rates (3.4 kHz at 8 kHz)."""

STOPBAND_DB = 66.0
"""Kaiser design target for the stopband attenuation, in dB (the measured minimum is
above 60 dB for every rate pair; the tests check it)."""

TAP_BITS = 22
"""Fractional bits of the taps (each tap is an integer times 2**-TAP_BITS). With
|sample| <= 2**15 and sum(|tap|) < 2**6, every partial sum is a multiple of 2**-22 below
2**21, so 43 significant bits suffice: inside float64's 53, hence exact."""

_SCALE = 1.0 / (1 << TAP_BITS)
_Float = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FilterDesign:
    """The low-pass filter behind one rate pair, and the figures that follow from it."""

    in_rate: int
    """Input sample rate, Hz."""
    out_rate: int
    """Output sample rate, Hz."""
    up: int
    """L: upsampling factor (out_rate / gcd)."""
    down: int
    """M: downsampling factor (in_rate / gcd)."""
    taps: _Float
    """Integer-valued prototype taps at ``up * in_rate`` Hz, scaled by 2**TAP_BITS."""
    block: _Float
    """(K + M - 1, L) matrix: one block of inputs → L outputs (see module docstring).

    Holds the taps times 2**-TAP_BITS: scaling by a power of two is exact in binary floating
    point, so every product and partial sum is still an exact multiple of 2**-TAP_BITS and
    the output needs no separate scaling step."""

    @property
    def filter_rate(self) -> int:
        """Rate at which the prototype filter runs, Hz (``up * in_rate``)."""
        return self.up * self.in_rate

    @property
    def delay_ms(self) -> float:
        """Group delay of the linear-phase filter, ms (half its length)."""
        return (len(self.taps) - 1) / 2 / self.filter_rate * 1000

    @property
    def window(self) -> int:
        """Input samples one block of outputs depends on (``K + M - 1``)."""
        return int(self.block.shape[0])

    def response_db(self, freqs_hz: npt.ArrayLike) -> _Float:
        """Filter gain in dB (0 dB = unity passband) at each frequency in ``freqs_hz``."""
        f = np.asarray(freqs_hz, dtype=np.float64)
        n = np.arange(len(self.taps))
        resp = np.exp(-2j * np.pi * np.outer(f / self.filter_rate, n)) @ self.taps
        gain = np.abs(resp) * _SCALE / self.up
        return np.asarray(20 * np.log10(np.maximum(gain, 1e-20)), dtype=np.float64)


@cache
def design(in_rate: int, out_rate: int) -> FilterDesign:
    """Design (once per rate pair, then cached) the filter for ``in_rate`` → ``out_rate``.

    Raises:
        UnsupportedFormatError: a rate outside :data:`SUPPORTED_RATES`, or equal rates.
    """
    for name, rate in (("input", in_rate), ("output", out_rate)):
        if rate not in SUPPORTED_RATES:
            raise UnsupportedFormatError(
                f"{name} sample rate {rate} Hz is not supported; "
                f"expected one of {', '.join(map(str, SUPPORTED_RATES))} Hz"
            )
    if in_rate == out_rate:
        raise UnsupportedFormatError(f"no filter for {in_rate} Hz → {out_rate} Hz: rates are equal")
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    taps = _kaiser_lowpass(up * in_rate, min(in_rate, out_rate), up)
    block = _block_matrix(taps, up, down) * _SCALE
    return FilterDesign(in_rate, out_rate, up, down, taps, block)


def _kaiser_lowpass(filter_rate: int, low_rate: int, gain: int) -> _Float:
    """Kaiser-windowed sinc (Kaiser & Schafer's formulas for beta and length), rounded."""
    f_pass = PASSBAND_FRACTION * low_rate
    width = low_rate - 2 * f_pass  # stopband starts at low_rate - f_pass
    beta = 0.1102 * (STOPBAND_DB - 8.7)
    order = math.ceil((STOPBAND_DB - 7.95) / (2.285 * 2 * math.pi * width / filter_rate))
    order += order % 2  # even order → odd length → integer-sample centre
    n = np.arange(order + 1) - order / 2
    cutoff = low_rate / 2 / filter_rate  # cycles per sample, mid-transition
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(order + 1, beta) * gain
    return np.asarray(np.round(h * (1 << TAP_BITS)), dtype=np.float64)


def _block_matrix(taps: _Float, up: int, down: int) -> _Float:
    """Matrix P with ``window @ P`` = the ``up`` outputs of one block.

    Output ``i`` of block ``j`` sits at upsampled index ``(j*M + i*M/L)*L``: its phase is
    ``p = i*M mod L`` and its newest input is ``base = j*M + i*M // L``; it is
    ``sum_t taps[p + L*t] * x[base - t]``. The window starts ``K - 1`` samples before
    ``j*M``, so input ``base - t`` is row ``i*M // L - t + K - 1``.
    """
    k = -(-len(taps) // up)  # taps per phase
    padded = np.zeros(k * up)
    padded[: len(taps)] = taps
    block = np.zeros((k + down - 1, up))
    for i in range(up):
        phase, lead = (i * down) % up, (i * down) // up
        rows = lead + k - 1 - np.arange(k)
        block[rows, i] = padded[phase::up]
    return block


class Resampler:
    """Streaming PCM16 little-endian resampler for one stream in one direction.

    Args:
        in_rate: input sample rate, Hz (one of :data:`SUPPORTED_RATES`).
        out_rate: output sample rate, Hz (one of :data:`SUPPORTED_RATES`); equal rates
            make a pass-through with no delay.

    Raises:
        UnsupportedFormatError: a rate outside :data:`SUPPORTED_RATES`.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._design = None if in_rate == out_rate else design(in_rate, out_rate)
        self._work: _Float = np.zeros(0)
        self._windows: _Float = np.empty((0, 0))
        self._strides = (8, 8)
        self._acc: _Float = np.empty((0, 0))
        self._out: npt.NDArray[np.int16] = np.empty(0, dtype=PCM16)
        self._pending = 0
        self._in_total = 0
        self._out_total = 0
        self.reset()

    @property
    def delay_ms(self) -> float:
        """Algorithmic delay, ms: how far the output lags the input (0 for pass-through)."""
        return 0.0 if self._design is None else self._design.delay_ms

    def reset(self) -> None:
        """Forget the stream: the next :meth:`process` starts a new one from silence."""
        window = 1 if self._design is None else self._design.window
        down = 1 if self._design is None else self._design.down
        # Start as if K - 1 zero samples came before the stream (a causal filter at rest).
        self._pending = window - down
        self._work = np.zeros(self._pending + 8000)
        self._in_total = 0
        self._out_total = 0

    def process(self, chunk: Buffer) -> bytes:
        """Resample ``chunk`` (PCM16 LE, any whole number of samples) and return what is ready.

        Raises:
            InvalidAudioError: ``chunk`` is not a whole number of 16-bit samples.
        """
        samples = pcm16_samples(chunk)
        if self._design is None:
            return samples.tobytes()
        self._in_total += len(samples)
        return self._run(self._design, samples)

    def flush(self) -> bytes:
        """End the stream: return the filter's tail (about :attr:`delay_ms` of audio) and reset.

        After ``process`` of a whole stream and ``flush``, the output holds
        ``ceil(n * out/in)`` samples plus the delay, rounded up to whole output samples.
        """
        d = self._design
        if d is None or self._in_total == 0:
            self.reset()
            return b""
        target = -(-self._in_total * d.up // d.down) + math.ceil((len(d.taps) - 1) / 2 / d.down)
        blocks = -(-target // d.up)
        zeros = max(blocks * d.down - self._in_total, 0)
        tail = self._run(d, np.zeros(zeros, dtype=np.int16))
        out = tail[: max(target - (self._out_total - len(tail) // 2), 0) * 2]
        self.reset()
        return out

    def _run(self, d: FilterDesign, samples: npt.NDArray[np.int16]) -> bytes:
        start, end = self._pending, self._pending + len(samples)
        if end > len(self._work):
            grown = np.zeros(2 * end)
            grown[:start] = self._work[:start]
            self._work = grown
        work = self._work
        work[start:end] = samples
        blocks = (end - d.window) // d.down + 1 if end >= d.window else 0
        if blocks <= 0:
            self._pending = end
            return b""
        acc, out = self._scratch(d, blocks)
        # Block b's window starts down*b samples in: a strided view, copied once so that
        # the product runs in BLAS (faster than numpy's loop over overlapping rows).
        view = np.ndarray(self._windows.shape, np.float64, work, 0, self._strides)
        np.copyto(self._windows, view)
        np.matmul(self._windows, d.block, out=acc)
        used = blocks * d.down
        work[: end - used] = work[used:end]
        self._pending = end - used
        np.rint(acc, out=acc)
        np.minimum(acc, 32767.0, out=acc)
        np.maximum(acc, -32768.0, out=acc)
        out[:] = acc.ravel()
        self._out_total += len(out)
        return out.tobytes()

    def _scratch(self, d: FilterDesign, blocks: int) -> tuple[_Float, npt.NDArray[np.int16]]:
        """Per-chunk buffers, reallocated only when the chunk size changes."""
        if self._windows.shape[0] != blocks:
            self._windows = np.empty((blocks, d.window))
            self._strides = (d.down * 8, 8)
            self._acc = np.empty((blocks, d.up))
            self._out = np.empty(blocks * d.up, dtype=PCM16)
        return self._acc, self._out
