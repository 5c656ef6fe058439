"""Smoke test: the codecs benchmark runs end to end with a tiny iteration count.

No timing is asserted here (unit tests never assert wall-clock times); the figures are
printed by ``python -m loadtest.codecs_bench`` and recorded in docs/performance.md.
"""

from __future__ import annotations

import pytest

from loadtest import codecs_bench


def test_bench_runs_and_prints_every_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert codecs_bench.main(["--frames", "3", "--markdown"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "resample 48→16 kHz",
        "inbound: μ-law decode → 8→16 kHz → VAD",
        "calls per core",
        "rymi polyphase FIR",
        "audioop.ratecv",
        "soxr HQ",
    ):
        assert expected in out


def test_quality_figures_separate_filtered_from_unfiltered() -> None:
    ours = codecs_bench.measure(codecs_bench._ours, 16000, 8000, 3)
    ratecv = codecs_bench.measure(codecs_bench._ratecv, 16000, 8000, 3)
    assert ours.alias_db is not None
    assert ours.alias_db < -60
    assert ratecv.alias_db is not None
    assert ratecv.alias_db > -3
    assert abs(ours.lag_ms - 1.6875) < 0.07
    assert ours.held_ms == 0.0
    assert ours.empty_pct == 0.0


def test_rejects_zero_frames() -> None:
    with pytest.raises(SystemExit):
        codecs_bench.main(["--frames", "0"])
