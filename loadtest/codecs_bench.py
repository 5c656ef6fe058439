"""Codecs benchmark: per-frame cost of every transform, the per-call chain, and resamplers.

Run ``python -m loadtest.codecs_bench`` (``--frames N`` for more or fewer iterations,
``--markdown`` for tables to paste into docs/performance.md). It prints:

1. microseconds per 20 ms frame for each transform in ``rymi_codecs``;
2. the whole per-call chain (inbound: μ-law decode → resample 8→16 kHz → VAD; outbound:
   resample 16→8 kHz → μ-law encode) and the calls one core could carry on codec work alone;
3. our resampler next to ``soxr.ResampleStream`` (QQ, HQ, VHQ) and ``audioop.ratecv``:
   latency (cross-correlation lag plus audio held back between calls), SNR on a 997 Hz tone,
   how loud a 5 kHz tone comes out at 8 kHz (aliasing), µs per frame, and how often a
   20 ms call returns nothing.

soxr and scipy are dev-only dependencies; soxr rows are skipped when it is not installed.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from rich import box
from rich.console import Console
from rich.table import Table

from rymi_codecs import (
    L16_16K,
    MULAW_8K,
    AgentToCaller,
    CallerToAgent,
    Framer,
    Resampler,
    VoiceActivityDetector,
    decode_alaw,
    decode_mulaw,
    encode_alaw,
    encode_mulaw,
    rms_dbfs,
)

with warnings.catch_warnings():
    # PEP 594: audioop warns on import on 3.11/3.12 (audioop-lts on 3.13+ does not).
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["main"]

FRAME_S = 0.020
_Float = npt.NDArray[np.float64]


class Stream(Protocol):
    """A streaming resampler under comparison: PCM16 bytes in, PCM16 bytes out."""

    def __call__(self, chunk: bytes) -> bytes: ...


# --- test signals -------------------------------------------------------------------


def speechlike(rate: int, seconds: float, seed: int = 1) -> bytes:
    """Band-limited noise (to 0.4 x the rate) at about -12 dBFS: busy, like speech."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[np.fft.rfftfreq(n, 1 / rate) > 0.4 * rate] = 0
    x = np.fft.irfft(spectrum, n)
    return bytes(np.rint(x * 8000 / np.abs(x).max()).astype("<i2").tobytes())


def tone(freq: float, rate: int, seconds: float) -> bytes:
    """A sine at half scale."""
    t = np.arange(int(rate * seconds)) / rate
    return bytes(np.rint(16000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes())


def frames(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into ``size``-byte pieces (the last may be short)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- timing -------------------------------------------------------------------------


def per_call_us(func: Callable[[bytes], object], inputs: Sequence[bytes], repeat: int = 5) -> float:
    """Best-of-``repeat`` mean microseconds per call of ``func`` over ``inputs``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for item in inputs:
            func(item)
        best = min(best, (time.perf_counter_ns() - start) / len(inputs) / 1000)
    return best


def transform_rows(n: int) -> list[tuple[str, float]]:
    """(name, µs per 20 ms frame) for each transform, over ``n`` frames."""
    pcm8 = frames(speechlike(8000, n * FRAME_S), 320)[:n]
    pcm16 = frames(speechlike(16000, n * FRAME_S), 640)[:n]
    pcm24 = frames(speechlike(24000, n * FRAME_S), 960)[:n]
    pcm48 = frames(speechlike(48000, n * FRAME_S), 1920)[:n]
    ulaw = [encode_mulaw(f) for f in pcm8]
    alaw = [encode_alaw(f) for f in pcm8]
    vad = VoiceActivityDetector(16000, 20)
    framer = Framer(L16_16K)
    odd = frames(b"".join(pcm16), 600)[:n]  # 18.75 ms chunks: the framer carries remainders
    rows = [
        ("μ-law decode (160 B → 320 B)", per_call_us(decode_mulaw, ulaw)),
        ("μ-law encode (320 B → 160 B)", per_call_us(encode_mulaw, pcm8)),
        ("A-law decode", per_call_us(decode_alaw, alaw)),
        ("A-law encode", per_call_us(encode_alaw, pcm8)),
    ]
    for a, b, data in [
        (8000, 16000, pcm8),
        (16000, 8000, pcm16),
        (16000, 24000, pcm16),
        (24000, 16000, pcm24),
        (48000, 16000, pcm48),
    ]:
        rows.append(
            (f"resample {a // 1000}→{b // 1000} kHz", per_call_us(Resampler(a, b).process, data))
        )
    rows += [
        ("framer (L16 16 kHz, 600 B chunks)", per_call_us(framer.push, odd) * 640 / 600),
        ("VAD (16 kHz, hangover)", per_call_us(vad.process, pcm16)),
        ("RMS dBFS (L16 16 kHz)", per_call_us(lambda f: rms_dbfs(f, L16_16K), pcm16)),
    ]
    return rows


def chain_rows(n: int) -> list[tuple[str, float]]:
    """Per-frame µs of the inbound and outbound chains, by hand and with the pipeline."""
    ulaw = [encode_mulaw(f) for f in frames(speechlike(8000, n * FRAME_S), 320)[:n]]
    agent = frames(speechlike(16000, n * FRAME_S), 640)[:n]
    up, vad = Resampler(8000, 16000), VoiceActivityDetector(16000, 20)
    down = Resampler(16000, 8000)

    def inbound(payload: bytes) -> None:
        vad.process(up.process(decode_mulaw(payload)))

    def outbound(pcm: bytes) -> None:
        encode_mulaw(down.process(pcm))

    caller = CallerToAgent(MULAW_8K, 16000, VoiceActivityDetector(16000, 20))
    toward = AgentToCaller(16000, MULAW_8K)
    return [
        ("inbound: μ-law decode → 8→16 kHz → VAD", per_call_us(inbound, ulaw)),
        ("outbound: 16→8 kHz → μ-law encode", per_call_us(outbound, agent)),
        ("inbound via CallerToAgent (+VAD)", per_call_us(caller.process, ulaw)),
        ("outbound via AgentToCaller (+framing)", per_call_us(toward.process, agent)),
    ]


# --- resampler comparison -----------------------------------------------------------


@dataclass(frozen=True)
class Quality:
    """Measured figures of one resampler in one direction."""

    lag_ms: float
    """How far the output signal lags the input, by cross-correlation, ms."""
    held_ms: float
    """Most audio held back after any 20 ms call (input fed minus output returned), ms."""
    held_mean_ms: float
    """Mean audio held back after a 20 ms call, ms."""
    snr_db: float
    """SNR on a 997 Hz tone, dB (against the best-fit sine)."""
    alias_db: float | None
    """Level of a 5 kHz tone after 16→8 kHz, relative to the input, dB (down only)."""
    us_per_frame: float
    """Microseconds per 20 ms call."""
    empty_pct: float
    """Share of 20 ms calls that returned no audio, %."""


def _ours(a: int, b: int) -> Stream:
    return Resampler(a, b).process


def _soxr(quality: str) -> Callable[[int, int], Stream]:
    def make(a: int, b: int) -> Stream:
        import soxr  # dev-only: imported here so that the bench runs without it

        stream = soxr.ResampleStream(a, b, 1, dtype="int16", quality=quality)

        def run(chunk: bytes) -> bytes:
            out = stream.resample_chunk(np.frombuffer(chunk, dtype="<i2"))
            return bytes(np.asarray(out, dtype="<i2").tobytes())

        return run

    return make


def _ratecv(a: int, b: int) -> Stream:
    state: tuple[int, tuple[tuple[int, int], ...]] | None = None

    def run(chunk: bytes) -> bytes:
        nonlocal state
        out, state = audioop.ratecv(chunk, 2, 1, a, b, state)
        return bytes(out)

    return run


def stream_through(make: Callable[[int, int], Stream], a: int, b: int, data: bytes) -> list[bytes]:
    """Feed ``data`` 20 ms at a time to a fresh stream; the output of each call."""
    run = make(a, b)
    return [run(chunk) for chunk in frames(data, int(a * FRAME_S) * 2)]


def _samples(data: bytes) -> _Float:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def xcorr_lag(y: _Float, ideal: _Float, up: int = 8) -> float:
    """Lag of ``y`` behind ``ideal`` in samples (1/``up`` resolution), by cross-correlation."""
    n = min(len(y), len(ideal))
    corr = np.fft.irfft(np.fft.rfft(y[:n]) * np.conj(np.fft.rfft(ideal[:n])), up * n)
    lag = int(np.argmax(corr))
    return (lag if lag < up * n // 2 else lag - up * n) / up


def tone_snr_db(y: _Float, freq: float, rate: int) -> float:
    """SNR of ``y`` against the best-fitting sine at ``freq``."""
    t = np.arange(len(y)) / rate
    basis = np.column_stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)])
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    fit = basis @ coef
    return float(10 * np.log10(np.sum(fit**2) / max(np.sum((y - fit) ** 2), 1e-30)))


def measure(make: Callable[[int, int], Stream], a: int, b: int, n: int) -> Quality:
    """All figures for one resampler from ``a`` to ``b`` Hz."""
    seconds = 1.0
    rng = np.random.default_rng(5)
    spectrum = np.fft.rfft(rng.standard_normal(int(a * seconds)))
    spectrum[np.fft.rfftfreq(int(a * seconds), 1 / a) > 0.4 * min(a, b)] = 0
    x = np.fft.irfft(spectrum, int(a * seconds))
    scale = 8000 / np.abs(x).max()
    ideal = np.fft.irfft(spectrum, int(b * seconds)) * b / a * scale
    outs = stream_through(make, a, b, np.rint(x * scale).astype("<i2").tobytes())
    lag_s = xcorr_lag(_samples(b"".join(outs)), ideal) / b
    # In output samples (integers), so that "nothing held back" is exactly 0.
    fed = np.arange(1, len(outs) + 1) * int(b * FRAME_S)
    backlog = (fed - np.cumsum([len(o) // 2 for o in outs])) / b
    held, held_mean = float(np.max(backlog)), float(np.mean(backlog))
    y = _samples(b"".join(stream_through(make, a, b, tone(997, a, seconds))))
    snr = tone_snr_db(y[b // 10 : -b // 10], 997, b)
    alias = None
    if b < a and b == 8000:
        z = _samples(b"".join(stream_through(make, a, b, tone(5000, a, seconds))))[
            b // 10 : -b // 10
        ]
        alias = float(20 * np.log10(max(np.sqrt(np.mean(z**2)), 1e-9) / (16000 / np.sqrt(2))))
    run = make(a, b)
    chunks = frames(speechlike(a, n * FRAME_S), int(a * FRAME_S) * 2)[:n]
    us = per_call_us(run, chunks, repeat=1)
    empty = 100.0 * sum(1 for o in outs if not o) / len(outs)
    return Quality(lag_s * 1000, held * 1000, held_mean * 1000, snr, alias, us, empty)


def comparison(n: int) -> list[tuple[str, str, Quality]]:
    """(direction, resampler, figures) rows for 8→16 and 16→8 kHz."""
    makers: list[tuple[str, Callable[[int, int], Stream]]] = [("rymi polyphase FIR", _ours)]
    try:
        import soxr  # noqa: F401 - only checking that it is there
    except ImportError:  # pragma: no cover - dev extra installed in CI
        pass
    else:
        makers += [(f"soxr {q}", _soxr(q)) for q in ("QQ", "HQ", "VHQ")]
    makers.append(("audioop.ratecv", _ratecv))
    return [
        (f"{a // 1000}→{b // 1000} kHz", name, measure(make, a, b, n))
        for a, b in ((16000, 8000), (8000, 16000))
        for name, make in makers
    ]


# --- output -------------------------------------------------------------------------


def render(n: int, console: Console, markdown: bool = False) -> None:
    """Measure everything with ``n`` frames per figure and print the tables."""
    style = box.MARKDOWN if markdown else box.HEAVY_HEAD
    t1 = Table(title=f"rymi_codecs: µs per 20 ms frame ({n} frames, best of 5)", box=style)
    t1.add_column("transform")
    t1.add_column("µs/frame", justify="right")
    for name, us in transform_rows(n):
        t1.add_row(name, f"{us:.2f}")
    console.print(t1)

    chains = chain_rows(n)
    t2 = Table(title="per-call chain (one call, both directions, per 20 ms)", box=style)
    t2.add_column("chain")
    t2.add_column("µs/frame", justify="right")
    for name, us in chains:
        t2.add_row(name, f"{us:.2f}")
    both = chains[0][1] + chains[1][1]
    t2.add_row("inbound + outbound", f"{both:.2f}")
    t2.add_row("calls per core (codec work only)", f"{FRAME_S * 1e6 / both:,.0f}")
    console.print(t2)

    t3 = Table(title="resamplers side by side (streamed in 20 ms calls)", box=style)
    for col in (
        "direction",
        "resampler",
        "xcorr lag ms",
        "held back ms mean / max",
        "SNR dB (997 Hz)",
        "5 kHz → 8 kHz dB",
    ):
        t3.add_column(col, justify="right" if "dB" in col or "ms" in col else "left")
    t3.add_column("µs/frame", justify="right")
    t3.add_column("empty calls %", justify="right")
    for direction, name, q in comparison(n):
        alias = "—" if q.alias_db is None else f"{q.alias_db:.1f}"
        t3.add_row(
            direction,
            name,
            f"{q.lag_ms:.2f}",
            f"{q.held_mean_ms:.1f} / {q.held_ms:.1f}",
            f"{q.snr_db:.1f}",
            alias,
            f"{q.us_per_frame:.1f}",
            f"{q.empty_pct:.0f}",
        )
    console.print(t3)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: ``python -m loadtest.codecs_bench [--frames N] [--markdown]``."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.codecs_bench", description=__doc__)
    parser.add_argument("--frames", type=int, default=2000, help="frames per timing (default 2000)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    console = Console(width=160) if not args.markdown else Console(width=200, no_color=True)
    render(args.frames, console, args.markdown)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
