"""The leases one gateway instance holds, remembered locally (pure, no I/O).

Redis is not the only copy of "which calls are live here": when Redis restarts without
its data, every instance puts its own leases back from this book (see
docs/coordination.md, "Restart and re-assert"). The book holds only leases whose
``instance_id`` is this instance's.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.store.coordination.types import Lease, LeaseState

__all__ = ["BookEntry", "LeaseBook"]


@dataclass(frozen=True, slots=True)
class BookEntry:
    """One held lease.

    Attributes:
        lease: the lease as last confirmed by the backend.
        ttl_ms: the TTL it was last set with; re-asserts use it again.
        deadline: local monotonic time (s) after which a *reserved* lease has surely
            expired (nobody renews reservations); unused for live leases.
    """

    lease: Lease
    ttl_ms: int
    deadline: float


class LeaseBook:
    """Leases held by this instance, by call id."""

    def __init__(self) -> None:
        self._entries: dict[str, BookEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def hold(self, lease: Lease, ttl_ms: int, now: float) -> None:
        """Record (or update) a lease this instance holds."""
        self._entries[lease.call_id] = BookEntry(lease, ttl_ms, now + ttl_ms / 1000)

    def refresh(self, lease: Lease, ttl_ms: int, now: float) -> bool:
        """Update ``lease`` only if it is still held under its token; False if it is not
        (it was released while a renew or re-assert of it was in flight)."""
        entry = self._entries.get(lease.call_id)
        if entry is None or entry.lease.token != lease.token:
            return False
        self._entries[lease.call_id] = BookEntry(lease, ttl_ms, now + ttl_ms / 1000)
        return True

    def get(self, call_id: str) -> BookEntry | None:
        """The entry for ``call_id``, if held."""
        return self._entries.get(call_id)

    def drop(self, call_id: str, token: int | None = None) -> None:
        """Forget ``call_id`` (only if held under ``token``, when given)."""
        entry = self._entries.get(call_id)
        if entry is not None and (token is None or entry.lease.token == token):
            del self._entries[call_id]

    def entries(self, now: float) -> list[BookEntry]:
        """Every lease still worth re-asserting; forgets reservations that ran out."""
        expired = [
            call_id
            for call_id, entry in self._entries.items()
            if entry.lease.state is LeaseState.RESERVED and entry.deadline <= now
        ]
        for call_id in expired:
            del self._entries[call_id]
        return list(self._entries.values())

    def live(self) -> list[BookEntry]:
        """The live (claimed) leases: the ones the renew loop keeps alive."""
        return [e for e in self._entries.values() if e.lease.state is LeaseState.LIVE]
