"""In-process coordination: the embedded default for a single gateway process.

All instances that should see the same leases share one :class:`MemoryHub` (one per
process in production; tests create several :class:`MemoryCoordination` objects on one
hub to play a fleet). Every operation runs without awaiting in between, so on one event
loop each is atomic, exactly like a Lua script on Redis. Time comes from the hub's
injected clock, so expiry tests move a fake clock instead of sleeping.

This backend never loses its data while the process lives, so it has no restart epoch;
when the process dies, its calls die with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

from gateway.errors import ConflictError, CoordinationUnavailable, NotFoundError
from gateway.reasons import RefusalReason
from gateway.store.coordination.base import Clock, Coordination
from gateway.store.coordination.types import (
    Admission,
    CallCommand,
    Claim,
    ClaimStatus,
    Lease,
    LeaseState,
    RateDecision,
    RenewStatus,
)

__all__ = ["MemoryCoordination", "MemoryHub"]

_QUEUE_SIZE = 1000  # commands waiting for one instance; beyond that the oldest are dropped
_SWEEP_EVERY = 1.0  # seconds between sweeps of expired records and tombstones


@dataclass(frozen=True, slots=True)
class _Record:
    """What Redis keeps in ``{ns}:call:<id>``: owner, token and deadline of one call."""

    tenant: str
    instance_id: str
    token: int
    state: LeaseState | None  # None = released (a tombstone)
    prev: int  # the token this lease was claimed from (0 if none)
    deadline: float  # hub clock, seconds


class MemoryHub:
    """The shared state of in-process coordination.

    Args:
        clock: monotonic clock in seconds; inject a fake one in tests.
        tombstone_ttl: seconds a released call's record is kept, so a renew arriving
            late cannot bring its lease back.
    """

    def __init__(self, *, clock: Clock = time.monotonic, tombstone_ttl: float = 120.0) -> None:
        self.clock = clock
        self.tombstone_ttl = tombstone_ttl
        self.leases: dict[str, dict[str, float]] = {}  # tenant -> call id -> deadline
        self.calls: dict[str, _Record] = {}
        self.queues: dict[str, asyncio.Queue[CallCommand]] = {}
        self.windows: dict[str, tuple[float, int]] = {}  # key -> (window end, hits)
        self._fence = 0
        self._next_sweep = 0.0

    def connect(self, instance_id: str) -> MemoryCoordination:
        """A coordination handle for one (simulated) gateway instance."""
        return MemoryCoordination(instance_id, hub=self)

    def next_token(self) -> int:
        """A fencing token larger than every one issued before."""
        self._fence += 1
        return self._fence

    def now(self) -> float:
        """The hub's time; also sweeps expired state now and then."""
        now = self.clock()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY
            self._sweep(now)
        return now

    def purge(self, tenant: str, now: float) -> dict[str, float]:
        """The tenant's unexpired leases (expired ones removed first)."""
        leases = self.leases.get(tenant)
        if leases is None:
            return {}
        for call_id in [c for c, deadline in leases.items() if deadline <= now]:
            del leases[call_id]
        return leases

    def record(self, call_id: str, now: float) -> _Record | None:
        """The call's record, unless it expired."""
        rec = self.calls.get(call_id)
        if rec is not None and rec.deadline <= now:
            del self.calls[call_id]
            return None
        return rec

    def put(self, call_id: str, rec: _Record) -> None:
        """Store ``rec`` and, unless it is a tombstone, its lease."""
        self.calls[call_id] = rec
        if rec.state is not None:
            self.leases.setdefault(rec.tenant, {})[call_id] = rec.deadline

    def queue(self, instance_id: str) -> asyncio.Queue[CallCommand]:
        """The command queue of ``instance_id`` (created on first use)."""
        return self.queues.setdefault(instance_id, asyncio.Queue(_QUEUE_SIZE))

    def _sweep(self, now: float) -> None:
        for call_id in [c for c, rec in self.calls.items() if rec.deadline <= now]:
            del self.calls[call_id]
        for tenant in list(self.leases):
            if not self.purge(tenant, now):
                del self.leases[tenant]
        for key in [k for k, (end, _) in self.windows.items() if end <= now]:
            del self.windows[key]


class MemoryCoordination(Coordination):
    """One instance's handle on a :class:`MemoryHub`.

    Args:
        instance_id: this instance's id.
        hub: the shared state; a private hub (one process, one instance) by default.
    """

    def __init__(self, instance_id: str, *, hub: MemoryHub | None = None) -> None:
        self._hub = hub or MemoryHub()
        super().__init__(instance_id, clock=self._hub.clock)
        self._closed = False

    async def ping(self) -> None:
        """Always answers while open."""
        self._check_open()

    async def close(self) -> None:
        """Refuse further operations (leases stay on the hub until they expire)."""
        self._closed = True

    async def _heartbeat(self) -> None:
        """Nothing to notice: the hub never loses its data while the process lives."""
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise CoordinationUnavailable("in-process coordination handle is closed")

    def _lease(self, call_id: str, rec: _Record) -> Lease:
        state = rec.state or LeaseState.LIVE
        return Lease(rec.tenant, call_id, rec.token, rec.instance_id, state)

    async def _reserve(
        self, tenant: str, call_id: str, limit: int | None, ttl_ms: int
    ) -> Admission:
        self._check_open()
        hub = self._hub
        now = hub.now()
        leases = hub.purge(tenant, now)
        rec = hub.record(call_id, now)
        if rec is not None:
            if rec.tenant != tenant or rec.state is not LeaseState.RESERVED:
                raise ConflictError(f"call_id {call_id!r} is another tenant's, live or ended")
            if call_id in leases:
                return Admission.admit(self._lease(call_id, rec), len(leases))
        if limit is not None and len(leases) >= limit:
            return Admission.refuse(RefusalReason.QUOTA_CONCURRENT_CALLS, len(leases))
        token = hub.next_token()
        deadline = now + ttl_ms / 1000
        active = len(leases) + 1
        hub.put(call_id, _Record(tenant, self.instance_id, token, LeaseState.RESERVED, 0, deadline))
        return Admission.admit(self._lease(call_id, hub.calls[call_id]), active)

    async def _claim(self, tenant: str, call_id: str, token: int, ttl_ms: int) -> Claim:
        self._check_open()
        hub = self._hub
        now = hub.now()
        leases = hub.purge(tenant, now)
        rec = hub.record(call_id, now)
        if rec is None or rec.tenant != tenant or rec.state is None or call_id not in leases:
            return Claim(ClaimStatus.GONE)
        if rec.token == token:  # the current holder hands the call over to us
            new = replace(
                rec,
                instance_id=self.instance_id,
                token=hub.next_token(),
                state=LeaseState.LIVE,
                prev=token,
                deadline=now + ttl_ms / 1000,
            )
            hub.put(call_id, new)
            return Claim(ClaimStatus.CLAIMED, self._lease(call_id, new))
        if rec.prev == token and rec.instance_id == self.instance_id:  # our own retry
            return Claim(ClaimStatus.CLAIMED, self._lease(call_id, rec))
        return Claim(ClaimStatus.FENCED)

    async def _renew(
        self, tenant: str, call_id: str, token: int, state: LeaseState, ttl_ms: int
    ) -> RenewStatus:
        self._check_open()
        hub = self._hub
        now = hub.now()
        leases = hub.purge(tenant, now)
        rec = hub.record(call_id, now)
        deadline = now + ttl_ms / 1000
        if rec is not None:
            if rec.tenant != tenant or rec.token > token:
                return RenewStatus.FENCED
            if rec.state is None:
                return RenewStatus.RELEASED
            if rec.token == token and call_id in leases:
                hub.put(call_id, replace(rec, deadline=deadline))
                return RenewStatus.RENEWED
        # Missing (expired while we were cut off) or held by an older token: the call is
        # real and ours, so it counts again, whatever the limit (reliability.md 1.3).
        hub.put(call_id, _Record(tenant, self.instance_id, token, state, 0, deadline))
        return RenewStatus.REASSERTED

    async def _release(self, tenant: str, call_id: str, token: int) -> bool:
        self._check_open()
        hub = self._hub
        now = hub.now()
        rec = hub.record(call_id, now)
        if rec is None or rec.state is None or rec.tenant != tenant or rec.token != token:
            return False
        hub.leases.get(tenant, {}).pop(call_id, None)
        hub.put(call_id, replace(rec, state=None, deadline=now + hub.tombstone_ttl))
        return True

    async def _active_calls(self, tenant: str) -> int:
        self._check_open()
        return len(self._hub.purge(tenant, self._hub.now()))

    async def _owner_of(self, call_id: str) -> str | None:
        self._check_open()
        rec = self._hub.record(call_id, self._hub.now())
        if rec is None or rec.state is None:
            return None
        return rec.instance_id

    async def _send(self, command: CallCommand) -> None:
        owner = await self._owner_of(command.call_id)
        if owner is None:
            raise NotFoundError(f"no live call {command.call_id!r}")
        queue = self._hub.queue(owner)
        if queue.full():  # nobody has been listening for a long time: keep the newest
            queue.get_nowait()
        queue.put_nowait(command)

    async def _commands(self, instance_id: str) -> AsyncGenerator[CallCommand, None]:
        queue = self._hub.queue(instance_id)
        while True:
            self._check_open()
            yield await queue.get()

    async def _hit(self, key: str, limit: int, window_ms: int) -> RateDecision:
        self._check_open()
        hub = self._hub
        now = hub.now()
        end, hits = hub.windows.get(key, (0.0, 0))
        if end <= now:
            end, hits = now + window_ms / 1000, 0
        if hits >= limit:
            return RateDecision(allowed=False, remaining=0, reset_after=end - now)
        hub.windows[key] = (end, hits + 1)
        return RateDecision(allowed=True, remaining=limit - hits - 1, reset_after=end - now)
