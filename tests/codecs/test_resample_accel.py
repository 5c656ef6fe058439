"""The resampler's compiled kernel (``rymi_codecs._fir``): built, in use, same bytes as numpy.

test_resample.py runs every stream test on both kernels. Here the two are compared call by
call (every rate pair, quiet, loud and clipping input, many chunkings, every buffer type,
reset and flush, and hypothesis over all of these), and the kernel alone is checked
against an exact integer reference on arbitrary taps, ties included (np.rint rounds them to
even).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rymi_codecs import SUPPORTED_RATES, Resampler, _compiled
from rymi_codecs.pcm import Buffer
from rymi_codecs.resample import ACCELERATED, TAP_BITS

PAIRS = list(itertools.permutations(SUPPORTED_RATES, 2))
BUILD_STEP = (
    "build it with `.venv/bin/pip install -e '.[dev]'` (hatch_build.py compiles "
    "codecs/rymi_codecs/_fir.c; it needs a C compiler: `sudo apt-get install gcc python3-dev`)"
)
_Int16 = npt.NDArray[np.int16]


def test_the_compiled_kernel_is_built_and_used() -> None:
    # Fails rather than skips: a test environment without the kernel would pass every other
    # test on the numpy path while the gateway spent 3-4x the CPU on resampling.
    assert _compiled.BUILT, (
        f"rymi_codecs._fir is not built ({_compiled.UNAVAILABLE}), so resamplers fall back "
        f"to numpy; {BUILD_STEP}"
    )
    forced_pure = os.environ.get(_compiled.PURE_ENV, "").strip() == "1"
    assert ACCELERATED is not forced_pure
    assert Resampler(8000, 16000).compiled is not forced_pure
    assert Resampler(8000, 16000, compiled=True).compiled
    assert not Resampler(8000, 16000, compiled=False).compiled


@pytest.mark.parametrize(("value", "default"), [("1", False), ("", True)])
def test_rymi_codecs_pure_makes_numpy_the_default(value: str, default: bool) -> None:
    code = (
        "from rymi_codecs import Resampler; from rymi_codecs.resample import ACCELERATED; "
        "print(ACCELERATED, Resampler(8000, 16000).compiled, "
        "Resampler(8000, 16000, compiled=True).compiled)"
    )
    env = {**os.environ, _compiled.PURE_ENV: value}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [str(default), str(default), "True"]


_WITHOUT_MODULE = """
import sys
sys.modules["rymi_codecs._fir"] = None  # what an install without a C compiler looks like
from rymi_codecs import Resampler, _compiled
from rymi_codecs.resample import ACCELERATED
r = Resampler(8000, 16000)
print(_compiled.BUILT, ACCELERATED, r.compiled, r.process(bytes(range(256)) * 5).hex())
try:
    Resampler(8000, 16000, compiled=True)
except ImportError as exc:
    print("ImportError:", exc)
try:
    _compiled.make_filter([1], 1, 1)
except ImportError as exc:
    print("ImportError:", exc)
"""


def test_without_the_module_resamplers_fall_back_to_numpy() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_MODULE], capture_output=True, text=True, check=True
    )
    status, *errors = result.stdout.splitlines()
    expected = Resampler(8000, 16000, compiled=True).process(bytes(range(256)) * 5)
    assert status.split() == ["False", "False", "False", expected.hex()]
    assert len(errors) == 2
    for error in errors:
        assert error.startswith("ImportError: rymi_codecs._fir is not built")
        assert "sudo apt-get install gcc python3-dev" in error


def test_selection_without_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same, in this process (for coverage): a second copy of the selection module,
    # loaded while the import of the kernel fails as it does when it was never built.
    spec = importlib.util.find_spec("rymi_codecs._compiled")
    assert spec is not None
    assert spec.loader is not None
    fallback = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "rymi_codecs._fir", None)
    spec.loader.exec_module(fallback)
    assert (fallback.BUILT, fallback.ACCELERATED) == (False, False)
    assert "rymi_codecs._fir" in fallback.UNAVAILABLE
    assert fallback.use_compiled(None) is False
    assert fallback.use_compiled(False) is False
    with pytest.raises(ImportError, match="not built"):
        fallback.use_compiled(True)
    with pytest.raises(ImportError, match="not built"):
        fallback.make_filter([1], 1, 1)


# --- the two kernels, call by call ----------------------------------------------------


def signal(kind: str, rate: int, seconds: float, seed: int = 0) -> _Int16:
    """Test input: quiet or busy noise, full-scale noise and squares (clipping), extremes."""
    n = int(rate * seconds)
    rng = np.random.default_rng(seed)
    x: npt.ArrayLike
    if kind == "speechlike":  # about -21 dBFS: rarely above the numpy path's safe_peak
        x = np.clip(rng.normal(0, 3000, n), -32768, 32767)
    elif kind == "full_scale":
        x = rng.integers(-32768, 32768, n)
    elif kind == "square":  # full scale, 50 Hz to 1 kHz: the filter's overshoot clips
        period = int(rng.integers(rate // 1000, rate // 50 + 1))
        x = np.where(np.arange(n) // (period // 2 or 1) % 2, -32768, 32767)
    elif kind == "bursts":  # 20 ms loud, 20 ms quiet: the clipping check switches on and off
        loud = np.arange(n) // (rate // 50) % 2 == 0
        x = np.where(loud, rng.integers(-32768, 32768, n), rng.integers(-50, 51, n))
    else:  # "extremes": runs of the two int16 limits
        x = np.repeat(rng.choice([-32768, 32767], -(-n // 7)), 7)[:n]
    return np.asarray(x, dtype="<i2")


BUFFER_TYPES: list[Callable[[bytes], Buffer]] = [
    bytes,
    bytearray,
    memoryview,
    lambda b: np.frombuffer(b, dtype="<i2").copy().data,  # a memoryview of 2-byte items
]


def feed(r: Resampler, x: _Int16, sizes: list[int], reset_at: int | None = None) -> list[bytes]:
    """Every return value of ``r`` over ``x`` cut in ``sizes`` (cycled), then flush and reuse."""
    data, out, pos = x.tobytes(), [], 0
    for call, size in enumerate(itertools.cycle(sizes)):
        if pos >= len(data):
            break
        if call == reset_at:
            r.reset()
        out.append(r.process(BUFFER_TYPES[call % len(BUFFER_TYPES)](data[pos : pos + 2 * size])))
        pos += 2 * size
    out.append(r.flush())
    out.append(r.flush())  # nothing left
    # After flush the resampler starts over: the same stream gives the same bytes.
    out.append(r.process(data[: 2 * (len(x) // 2)]))
    out.append(r.flush())
    return out


def both(
    in_rate: int, out_rate: int, x: _Int16, sizes: list[int], reset_at: int | None = None
) -> tuple[list[bytes], list[bytes]]:
    """(numpy outputs, compiled outputs) of :func:`feed`."""
    numpy_path = feed(Resampler(in_rate, out_rate, compiled=False), x, sizes, reset_at)
    return numpy_path, feed(Resampler(in_rate, out_rate, compiled=True), x, sizes, reset_at)


KINDS = ["speechlike", "full_scale", "square", "bursts", "extremes"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_same_bytes_in_20ms_frames(in_rate: int, out_rate: int, kind: str) -> None:
    x = signal(kind, in_rate, 0.3, seed=in_rate + out_rate)
    expected, got = both(in_rate, out_rate, x, [in_rate // 50])
    assert got == expected
    assert sum(map(len, got)) > 0


@pytest.mark.parametrize(
    "sizes", [[1], [7], [159, 161], [1, 2, 3, 500], [1_000_000], [2, 1000, 3]], ids=str
)
@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_same_bytes_in_any_chunking(in_rate: int, out_rate: int, sizes: list[int]) -> None:
    for kind in ("full_scale", "bursts"):
        x = signal(kind, in_rate, 0.06, seed=sum(sizes))
        expected, got = both(in_rate, out_rate, x, sizes, reset_at=5)
        assert got == expected, kind


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_reset_mid_stream_gives_the_same_bytes(in_rate: int, out_rate: int) -> None:
    x = signal("full_scale", in_rate, 0.2, seed=3)
    for reset_at in (1, 4, 7):
        expected, got = both(in_rate, out_rate, x, [in_rate // 50, 13], reset_at)
        assert got == expected


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("process"), st.integers(0, 1500)),
        st.tuples(st.sampled_from(["reset", "flush"]), st.just(0)),
    ),
    max_size=16,
)


@settings(max_examples=150, deadline=None)
@given(
    pair=st.sampled_from(PAIRS), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16), ops=_OPS
)
def test_any_sequence_of_calls_gives_the_same_bytes(
    pair: tuple[int, int], kind: str, seed: int, ops: list[tuple[str, int]]
) -> None:
    x = signal(kind, pair[0], 0.5, seed).tobytes()
    numpy_path, compiled = Resampler(*pair, compiled=False), Resampler(*pair, compiled=True)
    pos = 0
    for op, size in ops:
        if op == "reset":
            numpy_path.reset()
            compiled.reset()
            continue
        if op == "flush":
            assert compiled.flush() == numpy_path.flush()
            continue
        chunk = x[pos : pos + 2 * size]
        pos = (pos + 2 * size) % len(x)
        assert compiled.process(chunk) == numpy_path.process(chunk)
    assert compiled.flush() == numpy_path.flush()


# --- the kernel alone, against exact integer arithmetic ---------------------------------


def reference(taps: list[int], up: int, down: int, x: _Int16) -> bytes:
    """Exact outputs: zero-stuffed integer convolution, rounded half to even, saturated."""
    stuffed = np.zeros(len(x) * up, dtype=np.int64)
    stuffed[::up] = x
    exact = np.convolve(stuffed, np.asarray(taps, dtype=np.int64))[::down]
    # |exact| < 2**53 and the divisor is a power of two: the quotient is exact in float64.
    rounded = np.clip(np.rint(exact / 2.0**TAP_BITS), -32768, 32767)
    return np.asarray(rounded, dtype="<i2").tobytes()


def run_kernel(taps: list[int], up: int, down: int, x: _Int16, sizes: list[int]) -> bytes:
    from rymi_codecs._fir import Filter

    f, data, out, pos = Filter(taps, up, down), x.tobytes(), [], 0
    for size in itertools.cycle(sizes):
        if pos >= len(data):
            break
        out.append(f.process(data[pos : pos + 2 * size]))
        pos += 2 * size
    assert f.in_total == len(x)
    assert f.out_total == up * (len(x) // down)  # every M inputs give L outputs
    return b"".join(out)


def test_ties_round_to_even() -> None:
    # A tap of 2**21 halves its input: every odd sample is a tie between two integers.
    x = np.arange(-32768, 32768, dtype="<i2")
    got = np.frombuffer(run_kernel([1 << 21], 1, 1, x, [1000, 3]), dtype="<i2")
    assert got.tolist() == (np.rint(x / 2)).astype(int).tolist()
    assert got[32768 + 1] == 0  # 0.5 → 0
    assert got[32768 + 3] == 2  # 1.5 → 2
    assert got[32768 - 3] == -2  # -1.5 → -2


@pytest.mark.parametrize(
    "taps", [[1 << 22], [-(1 << 22)], [1 << 23], [3 << 20, -(5 << 19), 1 << 21]], ids=str
)
def test_gain_and_saturation(taps: list[int]) -> None:
    # -x overflows int16 at -32768 and 2x everywhere: both must saturate, never wrap.
    x = np.arange(-32768, 32768, dtype="<i2")
    got = run_kernel(taps, 1, 1, x, [4096])
    assert got == reference(taps, 1, 1, x)[: len(got)]


@settings(max_examples=200, deadline=None)
@given(
    # Magnitudes like the resampler's (their sum per phase is below 2**25), with a tap of
    # 2**21 or -2**20 somewhere most of the time: ties and quarter steps.
    taps=st.lists(st.integers(-(1 << 18), 1 << 18), min_size=1, max_size=48),
    special=st.tuples(st.sampled_from([0, 1 << 21, -(1 << 20)]), st.integers(0, 47)),
    up=st.integers(1, 6),
    down=st.integers(1, 6),
    kind=st.sampled_from(KINDS),
    sizes=st.lists(st.integers(1, 400), min_size=1, max_size=4),
)
def test_kernel_equals_exact_reference(
    taps: list[int], special: tuple[int, int], up: int, down: int, kind: str, sizes: list[int]
) -> None:
    value, at = special
    taps[at % len(taps)] = value or taps[at % len(taps)]
    x = signal(kind, 8000, 0.05, seed=len(taps))
    got = run_kernel(taps, up, down, x, sizes)
    assert got == reference(taps, up, down, x)[: len(got)]


# --- the kernel's argument checks (it is reachable from Python, so it must never crash) --


def test_kernel_rejects_bad_arguments() -> None:
    from rymi_codecs._fir import Filter

    for taps, up, down in (([1], 0, 1), ([1], 1, 0), ([1], 5000, 1), ([], 1, 1), ([1 << 31], 1, 1)):
        with pytest.raises(ValueError, match=r"must|out of range"):
            Filter(taps, up, down)
    with pytest.raises(ValueError, match="too large"):
        Filter([1 << 30] * 64, 1, 1)  # no split keeps the int32 sums exact
    with pytest.raises(TypeError):
        Filter(["1"], 1, 1)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        Filter(7, 1, 1)  # type: ignore[arg-type]
    f = Filter([1 << 22], 1, 1)
    with pytest.raises(ValueError, match="even byte count"):
        f.process(b"\x00")
    with pytest.raises(TypeError):
        f.process("text")  # type: ignore[arg-type]
    with pytest.raises(BufferError):
        f.process(memoryview(b"\x00" * 8)[::2])  # not contiguous


def test_kernel_state_and_reinitialisation() -> None:
    from rymi_codecs._fir import Filter

    blank = Filter.__new__(Filter)  # __init__ never ran: no buffers
    with pytest.raises(ValueError, match="not initialized"):
        blank.process(b"\x00\x00")
    with pytest.raises(ValueError, match="not initialized"):
        blank.reset()
    f = Filter([1 << 22, 1 << 22], 1, 1)
    assert f.process(b"\x01\x00\x01\x00") == b"\x01\x00\x02\x00"
    f.__init__([1 << 22], 1, 1)  # type: ignore[misc]  # starts over with the new taps
    assert (f.in_total, f.out_total) == (0, 0)
    assert f.process(b"\x05\x00") == b"\x05\x00"
    with pytest.raises(ValueError, match="out of range"):
        f.__init__([1 << 40], 1, 1)  # type: ignore[misc]
    with pytest.raises(ValueError, match="not initialized"):
        f.process(b"")  # a failed __init__ leaves no half-built filter behind
