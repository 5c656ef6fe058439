"""Per-socket message rate limit for carrier media sockets (reliability.md 5.3).

Carriers send about 50 media messages per second per direction. A socket that keeps
sending more than ``limit`` messages per second for ``window_s`` seconds in a row is
closed with 1008: a burst (a carrier catching up after a network stall) is allowed, a
flood is not, and the check costs two integer updates per message.
"""

from __future__ import annotations

__all__ = ["MessageRate"]


class MessageRate:
    """Counts messages in one-second buckets; refuses after ``window_s`` full seconds over.

    Args:
        limit: messages per second a socket may sustain.
        window_s: consecutive seconds over the limit before refusing.
    """

    def __init__(self, limit: int, window_s: int = 2) -> None:
        if limit < 1 or window_s < 1:
            raise ValueError("limit and window_s must be >= 1")
        self.limit = limit
        self.window_s = window_s
        self._second: int | None = None
        self._count = 0
        self._over = 0  # consecutive whole seconds over the limit

    def allow(self, now: float) -> bool:
        """Count one message at ``now`` (monotonic seconds); False once it must close."""
        second = int(now)
        if second != self._second:
            if self._second is not None:
                over = self._count > self.limit and second == self._second + 1
                self._over = self._over + 1 if over else 0
            self._second, self._count = second, 0
        self._count += 1
        return not (self._count > self.limit and self._over + 1 >= self.window_s)
