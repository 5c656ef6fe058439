"""The streaming resampler: filter figures, streaming == one-shot, aliasing, SNR, delay.

Every test that runs audio through a :class:`Resampler` runs on both kernels, numpy and
compiled (the ``compiled`` fixture); test_resample_accel.py compares the two directly.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rymi_codecs import SUPPORTED_RATES, InvalidAudioError, Resampler, UnsupportedFormatError
from rymi_codecs.resample import PASSBAND_FRACTION, TAP_BITS, design

PAIRS = [(a, b) for a, b in itertools.permutations(SUPPORTED_RATES, 2)]
KERNELS = [pytest.param(False, id="numpy"), pytest.param(True, id="compiled")]
_Float = npt.NDArray[np.float64]


@pytest.fixture(params=KERNELS)
def compiled(request: pytest.FixtureRequest) -> bool:
    """Which kernel the test's resamplers run (``Resampler(..., compiled=)``)."""
    return bool(request.param)


def tone(freq: float, rate: int, seconds: float, amplitude: float = 16000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def noise(rate: int, seconds: float, seed: int = 7) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, int(rate * seconds))  # full scale: exercises clipping
    return x.astype("<i2").tobytes()


def samples(data: bytes) -> _Float:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def one_shot(in_rate: int, out_rate: int, data: bytes, compiled: bool) -> bytes:
    r = Resampler(in_rate, out_rate, compiled=compiled)
    return r.process(data) + r.flush()


def chunked(in_rate: int, out_rate: int, data: bytes, sizes: list[int], compiled: bool) -> bytes:
    """Feed ``data`` in chunks of ``sizes`` samples (cycled) and return all output."""
    r = Resampler(in_rate, out_rate, compiled=compiled)
    out, pos = [], 0
    for size in itertools.cycle(sizes):
        if pos >= len(data):
            break
        out.append(r.process(data[pos : pos + 2 * size]))
        pos += 2 * size
    out.append(r.flush())
    return b"".join(out)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_filter_meets_delay_and_stopband(in_rate: int, out_rate: int) -> None:
    d = design(in_rate, out_rate)
    low = min(in_rate, out_rate)
    stop = np.linspace(low * (1 - PASSBAND_FRACTION), d.filter_rate / 2, 3000)
    passband = np.linspace(0, low * PASSBAND_FRACTION, 300)
    assert d.delay_ms <= 2.0
    assert d.response_db(stop).max() <= -60.0
    assert np.abs(d.response_db(passband)).max() < 0.01


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_frame_by_frame_equals_one_shot(in_rate: int, out_rate: int, compiled: bool) -> None:
    data = noise(in_rate, 0.5)
    frame = in_rate // 50
    streamed = chunked(in_rate, out_rate, data, [frame], compiled)
    assert streamed == one_shot(in_rate, out_rate, data, compiled)


@pytest.mark.parametrize("sizes", [[1], [7], [159, 161], [1, 2, 3, 500], [1000]])
@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (24000, 16000)])
def test_odd_chunk_sizes_equal_one_shot(
    in_rate: int, out_rate: int, sizes: list[int], compiled: bool
) -> None:
    data = noise(in_rate, 0.25, seed=sum(sizes))
    streamed = chunked(in_rate, out_rate, data, sizes, compiled)
    assert streamed == one_shot(in_rate, out_rate, data, compiled)


@pytest.mark.parametrize("compiled", KERNELS)  # not the fixture: hypothesis reruns the body
@settings(max_examples=40, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=6),
    seconds=st.floats(0.0, 0.2),
)
def test_any_chunking_equals_one_shot(
    pair: tuple[int, int], sizes: list[int], seconds: float, compiled: bool
) -> None:
    data = noise(pair[0], seconds, seed=len(sizes))
    assert chunked(*pair, data, sizes, compiled) == one_shot(*pair, data, compiled)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_20ms_in_gives_20ms_out(in_rate: int, out_rate: int, compiled: bool) -> None:
    r = Resampler(in_rate, out_rate, compiled=compiled)
    frame = tone(440, in_rate, 0.02)
    sizes = {len(r.process(frame)) for _ in range(10)}
    assert sizes == {out_rate // 50 * 2}


def test_anti_aliasing_5khz_tone_16k_to_8k(compiled: bool) -> None:
    # 5 kHz cannot exist at 8 kHz; without a filter it folds to 3 kHz at full level.
    out = samples(one_shot(16000, 8000, tone(5000, 16000, 1.0), compiled))[400:-400]
    in_rms = 16000 / np.sqrt(2)
    out_rms = np.sqrt(np.mean(out**2))
    assert 20 * np.log10(max(out_rms, 1e-9) / in_rms) <= -60.0


def _tone_snr_db(y: _Float, freq: float, rate: int) -> float:
    """SNR of ``y`` against the best-fitting sine at ``freq`` (any gain and phase)."""
    t = np.arange(len(y)) / rate
    basis = np.column_stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)])
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    fit = basis @ coef
    return float(10 * np.log10(np.sum(fit**2) / np.sum((y - fit) ** 2)))


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_tone_snr(in_rate: int, out_rate: int, compiled: bool) -> None:
    # 997 Hz, the usual "1 kHz" test tone: prime, so that the samples never repeat exactly.
    out = samples(one_shot(in_rate, out_rate, tone(997, in_rate, 0.5), compiled))
    steady = out[out_rate // 100 : len(out) - out_rate // 100]
    assert _tone_snr_db(steady, 997, out_rate) >= 70.0


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_measured_delay_matches_design(in_rate: int, out_rate: int, compiled: bool) -> None:
    # Band-limited noise, cross-correlated with the ideal (FFT) resampling of the input.
    rng = np.random.default_rng(3)
    n = in_rate  # one second
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / in_rate)
    spectrum[freqs > 0.4 * min(in_rate, out_rate)] = 0
    x = np.fft.irfft(spectrum, n)
    scale = 8000 / np.abs(x).max()
    ideal = np.fft.irfft(spectrum, n * out_rate // in_rate) * out_rate / in_rate * scale
    x *= scale
    pcm = np.rint(x).astype("<i2").tobytes()
    y = samples(one_shot(in_rate, out_rate, pcm, compiled))[: len(ideal)]
    # Circular cross-correlation, interpolated 8x by zero-padding its spectrum, so that the
    # half-sample delays of decimation are found to 1/8 of a sample.
    up = 8
    corr = np.fft.irfft(np.fft.rfft(y) * np.conj(np.fft.rfft(ideal)), up * len(y)) * up
    peak = int(np.argmax(corr))
    assert corr[peak] > 0.99 * np.sqrt(np.sum(y**2) * np.sum(ideal**2))  # same signal, shifted
    expected = Resampler(in_rate, out_rate).delay_ms * out_rate / 1000
    assert abs(peak / up - expected) <= 1 / up


def test_flush_length_and_reuse(compiled: bool) -> None:
    r = Resampler(8000, 16000, compiled=compiled)
    data = tone(300, 8000, 0.1)
    first = r.process(data) + r.flush()
    delay_samples = int(np.ceil(r.delay_ms * 16))
    assert len(first) == 2 * (1600 + delay_samples)
    # flush() resets: the same stream again gives the same bytes.
    assert r.process(data) + r.flush() == first
    assert r.flush() == b""  # nothing fed: nothing to flush


def test_reset_forgets_history(compiled: bool) -> None:
    r = Resampler(16000, 8000, compiled=compiled)
    r.process(noise(16000, 0.05))
    r.reset()
    fresh = Resampler(16000, 8000, compiled=compiled)
    data = tone(700, 16000, 0.04)
    assert r.process(data) == fresh.process(data)


def test_tiny_chunks_are_held_until_a_block_is_whole(compiled: bool) -> None:
    r = Resampler(24000, 16000, compiled=compiled)  # 3 inputs → 2 outputs
    assert r.process(b"\x01\x00") == b""
    assert r.process(b"\x01\x00") == b""
    assert len(r.process(b"\x01\x00")) == 4


def test_same_rate_is_pass_through(compiled: bool) -> None:
    r = Resampler(16000, 16000, compiled=compiled)
    data = noise(16000, 0.02)
    assert r.delay_ms == 0.0
    assert r.process(bytearray(data)) == data
    assert r.flush() == b""
    assert not r.compiled  # nothing to compile: no filter


def test_full_scale_input_clips_instead_of_wrapping(compiled: bool) -> None:
    square = np.tile(np.r_[np.full(20, 32767), np.full(20, -32768)], 50).astype("<i2")
    out = samples(one_shot(8000, 16000, square.tobytes(), compiled))
    assert out.max() == 32767
    assert out.min() == -32768
    # A wrapped sample would flip sign next to a full-scale neighbour.
    assert np.abs(np.diff(out)).max() < 40000


def exact_reference(in_rate: int, out_rate: int, x: npt.NDArray[np.int64]) -> _Float:
    """The filter's outputs before rounding, by integer convolution of the zero-stuffed input.

    Independent of the polyphase code: output ``k`` is the prototype filter at upsampled
    index ``k * M``; the integer sum is exact, and so is its division by 2**22.
    """
    d = design(in_rate, out_rate)
    stuffed = np.zeros(len(x) * d.up, dtype=np.int64)
    stuffed[:: d.up] = x
    return np.convolve(stuffed, d.taps.astype(np.int64))[:: d.down] / 2.0**TAP_BITS


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_clipping_matches_an_exact_reference_at_the_safe_peak(
    in_rate: int, out_rate: int, compiled: bool
) -> None:
    # Inputs with the signs of the phase whose taps sum largest in magnitude drive one
    # output to peak * that sum: the largest output any input of that peak can give. At
    # design.safe_peak it stays in range (the resampler skips clipping), one step louder
    # it does not (the resampler must clip), and at full scale it clips hard.
    d = design(in_rate, out_rate)
    phases = [d.taps[p :: d.up] for p in range(d.up)]
    worst = max(phases, key=lambda taps: float(np.abs(taps).sum()))
    signs = np.where(worst[::-1] < 0, -1, 1).astype(np.int64)
    for peak, clips in ((d.safe_peak, False), (d.safe_peak + 1, True), (32767, True)):
        x = np.zeros(in_rate // 10, dtype=np.int64)
        # Only every M-th upsampled position is an output: one burst per offset mod M
        # lines the pattern up with an output of the worst phase.
        spacing = len(x) // (d.down + 2)
        for i in range(d.down):
            at = 100 + i * spacing + i
            x[at : at + len(signs)] = peak * signs
        exact = exact_reference(in_rate, out_rate, x)
        assert bool(np.abs(exact).max() > 32767) is clips
        pcm = x.astype("<i2").tobytes()
        streamed = chunked(in_rate, out_rate, pcm, [in_rate // 50], compiled)
        expected = np.clip(np.rint(exact), -32768, 32767)[: len(streamed) // 2]
        assert streamed == expected.astype("<i2").tobytes()


@pytest.mark.parametrize("chunk", [b"\x00\x00\x00", bytearray(3), memoryview(b"\x00" * 5)])
def test_odd_byte_count_is_rejected(chunk: bytes, compiled: bool) -> None:
    r = Resampler(8000, 16000, compiled=compiled)
    with pytest.raises(InvalidAudioError, match="even byte count"):
        r.process(chunk)


@pytest.mark.parametrize("chunk", [[0, 0], np.zeros(4, dtype="<i2"), memoryview(b"\0" * 8)[::2]])
def test_non_buffers_are_rejected(chunk: object, compiled: bool) -> None:
    r = Resampler(8000, 16000, compiled=compiled)
    with pytest.raises(InvalidAudioError, match="expected PCM16 audio"):
        r.process(chunk)  # type: ignore[arg-type]


@pytest.mark.parametrize(("in_rate", "out_rate"), [(11025, 16000), (16000, 44100), (0, 8000)])
def test_unsupported_rates(in_rate: int, out_rate: int, compiled: bool) -> None:
    with pytest.raises(UnsupportedFormatError, match="expected one of 8000, 16000, 24000, 48000"):
        Resampler(in_rate, out_rate, compiled=compiled)


def test_design_refuses_equal_rates() -> None:
    with pytest.raises(UnsupportedFormatError, match="rates are equal"):
        design(8000, 8000)
