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
* **Grouped matrix products.** Every ``M`` input samples yield exactly ``L`` output
  samples, and those ``L`` outputs depend on one window of ``K + M - 1`` inputs (a
  "block"). ``G`` consecutive blocks depend on ``G*M + K - 1`` inputs, so a chunk is one
  ``(groups, G*M + K - 1) @ (G*M + K - 1, G*L)`` product over a strided view of the int16
  input history, copied to float64 once for BLAS (a chunk that is not whole groups
  computes a few outputs past its end and drops them). The grouped matrix repeats the
  block matrix down its diagonal and does 1.04-1.54 times the multiplications of one
  product per block, yet it is faster: the copied windows overlap ``G`` times less
  (copying one window per block was the largest single cost of a frame) and BLAS gets a
  real matrix product instead of a thin one. No Python loop per sample, and the history
  lives in a preallocated buffer.
* **A plan per chunk size.** In a call every chunk is the same 20 ms frame, so the views
  and scratch buffers for a chunk size are built once and reused while the history
  length stays the same. A steady frame then costs a copy of its bytes into the history
  buffer, the window copy, one product, the history shift, rounding in place, and the
  int16 conversion; numpy's per-call overhead, not arithmetic, used to be most of it.
* **Clipping only when it can happen.** An output is at most the largest input in its
  window times the sum of its taps' magnitudes (computed exactly: see
  :attr:`FilterDesign.safe_peak`). When ``audioop.max`` (one C call on the bytes, cheaper
  than one numpy call) finds the window's peak at or below ``safe_peak``, no output can
  leave int16's range and the two clipping calls are skipped. Louder windows are clipped
  as before; the bytes are the same either way.
* **A compiled kernel when there is one.** ``rymi_codecs._fir`` (``_fir.c``, built at
  install time) does the same sums in integers and rounds them the same way (half to even,
  then saturation to int16), so it gives the same bytes for a quarter to a third of the CPU.
  :data:`ACCELERATED` tells whether resamplers use it by default (built, and
  ``RYMI_CODECS_PURE=1`` not set: see ``_compiled.py``); ``compiled=`` chooses per instance.

A 20 ms frame at any supported rate is a whole number of blocks, so a 20 ms frame in
always gives exactly 20 ms out. Other chunk sizes hold back fewer than ``M`` input samples
until the next call.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt

from rymi_codecs._compiled import ACCELERATED, make_filter, use_compiled
from rymi_codecs.errors import UnsupportedFormatError
from rymi_codecs.format import SUPPORTED_RATES
from rymi_codecs.pcm import PCM16, Buffer, check_pcm16, pcm16_samples

if TYPE_CHECKING:
    from rymi_codecs._fir import Filter

with warnings.catch_warnings():
    # PEP 594 deprecates audioop; see g711.py, which also checks the byte order it needs.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "ACCELERATED",
    "GROUP_OUTPUTS",
    "PASSBAND_FRACTION",
    "STOPBAND_DB",
    "TAP_BITS",
    "FilterDesign",
    "Resampler",
]

PASSBAND_FRACTION = 0.425
"""Passband edge as a fraction of the lower of the two rates (3.4 kHz at 8 kHz)."""

STOPBAND_DB = 66.0
"""Kaiser design target for the stopband attenuation, in dB (the measured minimum is
above 60 dB for every rate pair; the tests check it)."""

TAP_BITS = 22
"""Fractional bits of the taps (each tap is an integer times 2**-TAP_BITS). With
|sample| <= 2**15 and sum(|tap|) < 2**6, every partial sum is a multiple of 2**-22 below
2**21, so 43 significant bits suffice: inside float64's 53, hence exact."""

GROUP_OUTPUTS = 16
"""Outputs per row of the grouped product: ``G = max(1, GROUP_OUTPUTS // L)`` blocks. Of
8, 12, 16, 24 and 32 on 20 ms frames, 16 was fastest overall and within about 3 % of the
best at each pair; it also makes ``G`` divide the blocks of a 20 ms frame at every pair,
so frames compute nothing extra (12 and 24 do not, and were 10-20 % slower)."""

_SCALE = 1.0 / (1 << TAP_BITS)
_Float = npt.NDArray[np.float64]
# 0-d arrays, not Python floats: numpy converts these bounds on every call otherwise.
_MAX = np.array(32767.0)
_MIN = np.array(-32768.0)


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
    group: int
    """G: blocks computed per row of :attr:`grouped` (see the module docstring)."""
    grouped: _Float
    """(G*M + K - 1, G*L) matrix: ``G`` consecutive blocks at once, ``block`` repeated down
    its diagonal, ``M`` rows lower for each block."""
    safe_peak: int
    """Largest input magnitude that cannot clip: with every input of a window within
    ±``safe_peak``, every output is within ±32767 before rounding.

    An output is ``sum(c * x)`` over one column ``c`` of :attr:`grouped`, so
    ``|output| <= peak * sum(|c|)``; the column sums and their products by an integer
    below 2**15 are multiples of 2**-TAP_BITS below 2**21, exact in float64, so the bound
    is exact too."""

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
    group = max(1, GROUP_OUTPUTS // up)
    grouped = _grouped(block, down, group)
    return FilterDesign(
        in_rate, out_rate, up, down, taps, block, group, grouped, _safe_peak(grouped)
    )


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


def _grouped(block: _Float, down: int, group: int) -> _Float:
    """``block`` for ``group`` consecutive blocks: block ``j``'s window starts ``j*M`` in."""
    window, up = block.shape
    grouped = np.zeros((group * down + window - down, group * up))
    for j in range(group):
        grouped[j * down : j * down + window, j * up : (j + 1) * up] = block
    return grouped


@cache
def _int_taps(in_rate: int, out_rate: int) -> tuple[int, ...]:
    """The prototype taps as Python ints (they are integer-valued), for the compiled kernel."""
    return tuple(int(tap) for tap in design(in_rate, out_rate).taps)


def _safe_peak(grouped: _Float) -> int:
    """Largest ``peak`` with ``peak * max column sum of |grouped|`` <= 32767, exactly."""
    # The column sums are multiples of 2**-TAP_BITS (exact in float64): as integers, the
    # division is exact too.
    gain = int(np.abs(grouped).sum(axis=0).max() * (1 << TAP_BITS))
    return 32767 * (1 << TAP_BITS) // gain


class _Scratch(NamedTuple):
    """Buffers for one product over ``groups`` groups of ``G`` blocks.

    Named tuples here, not frozen dataclasses: chunks of changing sizes may build one per
    call, and a frozen dataclass takes several times longer to construct.
    """

    groups: int
    """Rows of the product: groups of ``G`` blocks."""
    strided: npt.NDArray[np.int16]
    """(groups, G*M + K - 1) overlapping view of the int16 work buffer."""
    windows: _Float
    """Contiguous float64 copy of ``strided`` (BLAS needs non-overlapping rows)."""
    acc: _Float
    """(groups, G*L) product."""
    flat: _Float
    """``acc`` as one row: the output samples in order."""


class _Plan(NamedTuple):
    """The fast path for one chunk size at one history length (see :meth:`Resampler.process`).

    Its views point into one :class:`Resampler`'s work buffer, so it is only valid for the
    history length (``start``) and chunk size (``n_in``) it was built for.
    """

    start: int
    """History samples before the chunk (``Resampler._pending`` on entry)."""
    n_in: int
    """Input samples in the chunk."""
    nbytes: int
    """Input bytes in the chunk (``2 * n_in``)."""
    into: memoryview
    """Bytes of the work buffer the chunk is copied into."""
    scratch: _Scratch
    """The product's buffers."""
    out: _Float
    """The part of ``scratch.flat`` that is output (all of it for a 20 ms frame)."""
    keep_to: memoryview
    """Bytes at the start of the work buffer that receive the history for the next chunk."""
    keep_from: memoryview
    """Bytes of the samples that become that history."""
    span: memoryview
    """Bytes of the history and the chunk: every input the chunk's outputs read."""


class Resampler:
    """Streaming PCM16 little-endian resampler for one stream in one direction.

    Args:
        in_rate: input sample rate, Hz (one of :data:`SUPPORTED_RATES`).
        out_rate: output sample rate, Hz (one of :data:`SUPPORTED_RATES`); equal rates
            make a pass-through with no delay.
        compiled: run the compiled kernel (``True``) or the numpy one (``False``); the
            default, ``None``, is :data:`ACCELERATED`. Both give the same bytes.

    Raises:
        UnsupportedFormatError: a rate outside :data:`SUPPORTED_RATES`.
        ImportError: ``compiled=True`` and the kernel is not built.
    """

    def __init__(self, in_rate: int, out_rate: int, *, compiled: bool | None = None) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        d = self._design = None if in_rate == out_rate else design(in_rate, out_rate)
        # The compiled kernel keeps the stream's state itself; the numpy members stay empty.
        self._core: Filter | None = None
        if use_compiled(compiled) and d is not None:
            self._core = make_filter(_int_taps(in_rate, out_rate), d.up, d.down)
        self._grouped = np.zeros((0, 0)) if self._design is None else self._design.grouped
        self._safe_peak = 0 if self._design is None else self._design.safe_peak
        self._work: npt.NDArray[np.int16] = np.zeros(0, dtype=PCM16)
        self._work_bytes = memoryview(b"")
        self._scratch: _Scratch | None = None
        self._plan: _Plan | None = None
        self._fast: _Plan | None = None
        self._pending = 0
        self._in_total = 0
        self._out_total = 0
        self.reset()

    @property
    def compiled(self) -> bool:
        """Whether this resampler runs the compiled kernel (see the module docstring)."""
        return self._core is not None

    def bytes_kernel(self) -> Callable[[bytes], bytes] | None:
        """What :meth:`process` runs for ``bytes`` of whole samples, for a checked caller.

        The per-frame chains call it on what a codec returned (always whole samples): the
        compiled kernel's own method (one C call, no Python frame), or :meth:`process` on
        the numpy path. None for a pass-through: the chunk itself is the output.
        """
        if self._design is None:
            return None
        if self._core is not None:
            return self._core.process
        return self.process

    @property
    def delay_ms(self) -> float:
        """Algorithmic delay, ms: how far the output lags the input (0 for pass-through)."""
        return 0.0 if self._design is None else self._design.delay_ms

    def reset(self) -> None:
        """Forget the stream: the next :meth:`process` starts a new one from silence."""
        if self._core is not None:
            self._core.reset()
            return
        window = 1 if self._design is None else self._design.window
        down = 1 if self._design is None else self._design.down
        # Start as if K - 1 zero samples came before the stream (a causal filter at rest).
        self._pending = window - down
        self._set_work(np.zeros(self._pending + 8000, dtype=PCM16))
        self._in_total = 0
        self._out_total = 0

    def process(self, chunk: Buffer) -> bytes:
        """Resample ``chunk`` (PCM16 LE, any whole number of samples) and return what is ready.

        Raises:
            InvalidAudioError: ``chunk`` is not a whole number of 16-bit samples.
        """
        core = self._core
        if core is not None:
            # bytes of whole samples go straight in; anything else gets the same checks
            # (and typed errors) as on the numpy path.
            if type(chunk) is not bytes or len(chunk) & 1:
                chunk = check_pcm16(chunk)
            return core.process(chunk)
        fast = self._fast
        # Fast path, a call's steady state: the same chunk size as last time, with the same
        # history before it. A bytes object of the planned (even) length is whole samples,
        # so it is copied straight into the work buffer, and every view is reused.
        if fast is not None and type(chunk) is bytes and len(chunk) == fast.nbytes:
            fast.into[:] = chunk
            self._in_total += fast.n_in
            out = self._filter(fast.scratch, fast.out, fast.span)
            fast.keep_to[:] = fast.keep_from
            return out
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
        d, core = self._design, self._core
        in_total = self._in_total if core is None else core.in_total
        if d is None or in_total == 0:
            self.reset()
            return b""
        target = -(-in_total * d.up // d.down) + math.ceil((len(d.taps) - 1) / 2 / d.down)
        blocks = -(-target // d.up)
        zeros = max(blocks * d.down - in_total, 0)
        if core is None:
            tail = self._run(d, np.zeros(zeros, dtype=PCM16))
            out_total = self._out_total
        else:
            tail = core.process(bytes(2 * zeros))
            out_total = core.out_total
        out = tail[: max(target - (out_total - len(tail) // 2), 0) * 2]
        self.reset()
        return out

    def _set_work(self, work: npt.NDArray[np.int16]) -> None:
        """Use ``work`` as the history+input buffer; views of the old one become invalid."""
        self._work = work
        self._work_bytes = work.data.cast("B")
        self._scratch = self._plan = self._fast = None

    def _run(self, d: FilterDesign, samples: npt.NDArray[np.int16]) -> bytes:
        """General path: any chunk size, any history; arms the fast path when steady."""
        start, n = self._pending, len(samples)
        end = start + n
        blocks = (end - d.window) // d.down + 1 if end >= d.window else 0
        groups = -(-blocks // d.group)
        # The last group may run past the chunk: its extra outputs read whatever follows
        # in the buffer (finite int16 values) and are dropped. The outputs kept read only
        # real input: every other row of their column in the grouped matrix is zero.
        need = max(end, groups * d.group * d.down + d.window - d.down)
        if need > len(self._work):
            grown = np.zeros(2 * need, dtype=PCM16)
            grown[:start] = self._work[:start]
            self._set_work(grown)
        work = self._work
        work[start:end] = samples
        if blocks <= 0:
            self._pending = end
            self._fast = None
            return b""
        scratch = self._scratch
        if scratch is None or scratch.groups != groups:
            scratch = self._scratch = self._make_scratch(d, groups)
        n_out = blocks * d.up
        flat = scratch.flat if n_out == len(scratch.flat) else scratch.flat[:n_out]
        out = self._filter(scratch, flat, self._work_bytes[: 2 * end])
        used = blocks * d.down
        work[: end - used] = work[used:end]
        self._pending = end - used
        # Same history length after as before: the next chunk of this size takes the fast
        # path (20 ms frames always do: they are whole blocks at every rate pair).
        self._fast = None if self._pending != start else self._make_plan(start, n, scratch, flat)
        return out

    def _make_plan(self, start: int, n: int, scratch: _Scratch, out: _Float) -> _Plan:
        """The fast path for ``n`` samples after ``start`` of history (reused if unchanged)."""
        plan = self._plan
        if plan is None or plan.start != start or plan.n_in != n or plan.scratch is not scratch:
            work, end, keep = self._work_bytes, start + n, self._pending
            # memoryview assignment is a memmove, so overlapping ranges are safe.
            into, keep_to = work[2 * start : 2 * end], work[: 2 * keep]
            keep_from, span = work[2 * (end - keep) : 2 * end], work[: 2 * end]
            plan = _Plan(start, n, 2 * n, into, scratch, out, keep_to, keep_from, span)
            self._plan = plan
        return plan

    def _make_scratch(self, d: FilterDesign, groups: int) -> _Scratch:
        """Views and buffers for a product over ``groups`` groups of blocks."""
        width, cols = d.grouped.shape
        # Group g's inputs start g*G*M samples in: an overlapping strided view, copied once
        # per chunk so that the product runs in BLAS (faster than numpy's own loop over
        # overlapping rows); the copy also converts int16 to float64.
        strided = np.ndarray((groups, width), PCM16, self._work, 0, (2 * d.group * d.down, 2))
        acc = np.empty((groups, cols))
        return _Scratch(groups, strided, np.empty((groups, width)), acc, acc.reshape(-1))

    def _filter(self, scratch: _Scratch, out: _Float, span: memoryview) -> bytes:
        """Filter the chunk now in the work buffer; return ``out`` as PCM16 bytes.

        ``span`` holds the bytes of every input ``out`` depends on (history and chunk).
        """
        windows = scratch.windows
        windows[...] = scratch.strided
        # ndarray.dot: less overhead on these small products than matmul, and than np.dot
        # (0.2 µs of __array_function__ dispatch). Any order of summation gives the same
        # bits here (see the module docstring).
        windows.dot(self._grouped, out=scratch.acc)
        np.rint(out, out=out)
        if audioop.max(span, 2) > self._safe_peak:
            np.minimum(out, _MAX, out=out)
            np.maximum(out, _MIN, out=out)
        self._out_total += len(out)
        return out.astype(PCM16).tobytes()
