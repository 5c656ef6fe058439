"""Time plans of a load run, sans I/O: the 20 ms frame clock and the call ramp.

A carrier sends one 20 ms frame every 20 ms on its own clock. The load tester does the
same on the monotonic clock with *absolute* deadlines: frame ``k`` is due at
``start + k * period``, computed from the index and never from the previous send, so a
late wake-up (a busy event loop) delays that one frame and the next ones catch up: the
schedule never drifts, however long the call (a relative ``sleep(0.02)`` after each send
would accumulate every wake-up's lateness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FRAME_S", "FrameClock", "ramp_starts"]

FRAME_S = 0.02
"""One carrier frame: 20 ms (Twilio, Plivo and Vonage all stream 20 ms frames)."""


@dataclass(frozen=True, slots=True)
class FrameClock:
    """Absolute deadlines of a frame stream that starts at ``start`` (monotonic seconds).

    Args:
        start: the deadline of frame 0.
        period: seconds between frames (> 0).
    """

    start: float
    period: float = FRAME_S

    def __post_init__(self) -> None:
        if not self.period > 0:
            raise ValueError(f"expected a period > 0 s, got {self.period}")

    def deadline(self, index: int) -> float:
        """When frame ``index`` is due."""
        if index < 0:
            raise ValueError(f"expected a frame index >= 0, got {index}")
        return self.start + index * self.period

    def due_count(self, now: float) -> int:
        """How many frames are due at ``now`` (frames ``0 .. n-1``)."""
        if now < self.start:
            return 0
        # The small epsilon keeps a deadline computed as start + k * period "due" at
        # exactly that time despite floating-point rounding of the division.
        return math.floor((now - self.start) / self.period + 1e-9) + 1

    def lateness(self, index: int, sent_at: float) -> float:
        """Seconds frame ``index`` went out after its deadline (negative: early)."""
        return sent_at - self.deadline(index)


def ramp_starts(count: int, rate: float, start: float = 0.0) -> list[float]:
    """Start times of ``count`` calls arriving at ``rate`` calls per second.

    Call ``i`` starts at ``start + i / rate``; ``rate`` = ``math.inf`` starts all at once.

    Raises:
        ValueError: ``count`` < 0 or ``rate`` <= 0.
    """
    if count < 0:
        raise ValueError(f"expected a call count >= 0, got {count}")
    if not rate > 0:
        raise ValueError(f"expected a ramp rate > 0 calls/s, got {rate}")
    if math.isinf(rate):
        return [start] * count
    return [start + i / rate for i in range(count)]
