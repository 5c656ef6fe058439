"""The frame clock (absolute deadlines) and the call ramp."""

from __future__ import annotations

import math

import pytest

from loadtest.schedule import FRAME_S, FrameClock, ramp_starts


def test_deadlines_are_absolute_and_do_not_drift() -> None:
    clock = FrameClock(start=1000.0)
    two_hours = 2 * 3600 * 50  # frames in a 2-hour call
    # Computed from the index, not accumulated: exact to float rounding after 2 hours.
    assert clock.deadline(two_hours) == pytest.approx(1000.0 + 7200.0, abs=1e-9)
    accumulated = 1000.0
    for _ in range(two_hours):
        accumulated += FRAME_S
    # What summing 20 ms steps would give instead (the drift an absolute clock avoids).
    assert abs(accumulated - clock.deadline(two_hours)) > 1e-9


def test_a_late_wakeup_delays_one_frame_and_the_rest_catch_up() -> None:
    clock = FrameClock(start=0.0)
    # The tester wakes 70 ms late for frame 2: frames 2, 3, 4 and 5 are due at once ...
    assert clock.due_count(0.04 + 0.07) == 6
    assert clock.lateness(2, 0.11) == pytest.approx(0.07)
    # ... and frame 6's deadline did not move.
    assert clock.deadline(6) == pytest.approx(0.12)


def test_due_count_counts_deadlines_at_or_before_now() -> None:
    clock = FrameClock(start=10.0, period=0.02)
    assert clock.due_count(9.99) == 0
    assert clock.due_count(10.0) == 1
    assert clock.due_count(10.02) == 2
    assert clock.due_count(10.0399) == 2


def test_bad_clock_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="period"):
        FrameClock(0.0, period=0)
    with pytest.raises(ValueError, match="index"):
        FrameClock(0.0).deadline(-1)


def test_ramp_spaces_calls_by_rate() -> None:
    assert ramp_starts(4, 2.0, start=1.0) == [1.0, 1.5, 2.0, 2.5]
    assert ramp_starts(3, math.inf) == [0.0, 0.0, 0.0]
    assert ramp_starts(0, 5.0) == []
    with pytest.raises(ValueError, match="rate"):
        ramp_starts(3, 0)
    with pytest.raises(ValueError, match="count"):
        ramp_starts(-1, 1)
