"""Coordination: concurrency leases, the live-call registry, commands and rate limits.

Two backends behind one interface (:class:`Coordination`): in-process
(:class:`MemoryCoordination`, the one-node default) and Redis
(:class:`RedisCoordination`, for a fleet). See docs/coordination.md.
"""

from __future__ import annotations

from typing import Any

from gateway.store.coordination.base import Clock, Coordination
from gateway.store.coordination.memory import MemoryCoordination, MemoryHub
from gateway.store.coordination.types import (
    Admission,
    CallCommand,
    Claim,
    ClaimStatus,
    Command,
    Lease,
    LeaseState,
    RateDecision,
    RenewStatus,
    new_instance_id,
)

__all__ = [
    "Admission",
    "CallCommand",
    "Claim",
    "ClaimStatus",
    "Clock",
    "Command",
    "Coordination",
    "Lease",
    "LeaseState",
    "MemoryCoordination",
    "MemoryHub",
    "RateDecision",
    "RenewStatus",
    "new_instance_id",
    "open_coordination",
]


def open_coordination(
    redis_url: str | None, instance_id: str | None = None, **options: Any
) -> Coordination:
    """The coordination backend for this process: Redis when a URL is given, else in-process.

    Args:
        redis_url: ``Settings.redis_url``; None means one node, in-process.
        instance_id: this process's id; a fresh unique one by default.
        options: keyword arguments for the backend (``RedisCoordination.from_url`` or
            ``MemoryHub``).
    """
    instance = instance_id or new_instance_id()
    if redis_url is None:
        return MemoryHub(**options).connect(instance)
    # Imported here so that a one-node deployment never imports the Redis client.
    from gateway.store.coordination.redis import RedisCoordination

    return RedisCoordination.from_url(redis_url, instance, **options)
