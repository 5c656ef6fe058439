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


class Keepalive:
    """When to ping a carrier media socket, and when its silence means it is gone.

    Carriers stream caller audio continuously, silence included (carrier-protocols.md
    §6), so a whole interval without a caller frame means the connection is half-open
    (reliability.md 5.3: ping every 20 s, timeout 20 s). The caller pings at each check
    that passes: it keeps proxies and NATs from idling the socket out and makes the
    kernel report a peer that is gone. The per-frame path pays nothing: the check
    compares the call's frame count with the one at the previous check.

    Args:
        interval_s: seconds between checks.
        now: monotonic seconds at the start (the first check is one interval later).
    """

    def __init__(self, interval_s: float, now: float) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = interval_s
        self.next_at = now + interval_s
        """When :meth:`check` is next due (monotonic seconds)."""
        self._frames = 0

    def check(self, now: float, frames_in: int) -> bool:
        """The check at ``now``: True if caller frames arrived since the last one (ping)."""
        self.next_at = now + self.interval_s
        alive, self._frames = frames_in != self._frames, frames_in
        return alive
