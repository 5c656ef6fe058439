"""Frozen values that coordination operations take and return, and their argument checks.

Times in the public API are seconds (``float``), as in :mod:`asyncio`; the backends work
in integer milliseconds of *their* clock (Redis ``TIME`` for Redis, an injected monotonic
clock in process). Fencing tokens are positive integers that only grow.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import ValidationError
from gateway.reasons import RefusalReason

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_TTL",
    "Admission",
    "CallCommand",
    "Claim",
    "ClaimStatus",
    "Command",
    "Lease",
    "LeaseState",
    "RateDecision",
    "RenewStatus",
    "check_limit",
    "check_name",
    "check_token",
    "check_ttl",
    "new_instance_id",
    "to_ms",
]

MAX_NAME_LENGTH = 200
"""Longest tenant id, call id, instance id or rate-limit key accepted (characters)."""

MAX_TTL = 86_400.0
"""Longest lease, window or tombstone accepted (seconds); longer is surely a unit mistake."""


class LeaseState(StrEnum):
    """Where a call's lease is in its life. Both states count against the limit."""

    RESERVED = "reserved"
    """Answered; the carrier has not opened the media stream yet (short TTL)."""

    LIVE = "live"
    """The media stream was claimed; the owner renews the lease while the call runs."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One concurrency slot held by one call.

    Attributes:
        tenant: the tenant whose limit the slot counts against.
        call_id: our call id; one lease per call.
        token: fencing token; only its holder may renew, hand over or release the lease.
        instance_id: the gateway instance that owns the call (gets its commands).
        state: reserved (answered) or live (media flowing).
    """

    tenant: str
    call_id: str
    token: int
    instance_id: str
    state: LeaseState


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to "may this call take a slot?": a lease, or a refusal reason.

    Attributes:
        lease: the slot, when admitted.
        reason: the stable refusal code, when refused.
        active: leases the tenant holds after the decision (None when unknown).
        retry_after: seconds after which asking again may succeed (coordination warming up).
    """

    lease: Lease | None
    reason: RefusalReason | None
    active: int | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if (self.lease is None) == (self.reason is None):
            raise ValueError("an Admission has exactly one of lease and reason")

    @property
    def admitted(self) -> bool:
        """True when the call got a slot."""
        return self.lease is not None

    @classmethod
    def admit(cls, lease: Lease, active: int | None) -> Admission:
        """An admission holding ``lease``."""
        return cls(lease=lease, reason=None, active=active)

    @classmethod
    def refuse(
        cls, reason: RefusalReason, active: int | None = None, retry_after: float | None = None
    ) -> Admission:
        """A refusal for ``reason``."""
        return cls(lease=None, reason=reason, active=active, retry_after=retry_after)


class ClaimStatus(StrEnum):
    """Outcome of claiming a reserved slot when the media stream starts."""

    CLAIMED = "claimed"
    """The caller now owns the lease under a fresh token."""

    GONE = "gone"
    """No such lease (never reserved, expired, released, or another tenant's): reject."""

    FENCED = "fenced"
    """The token is not the lease's current one (someone else claimed it): reject."""

    WARMING = "warming"
    """The backend lost its data and gateways are still re-asserting: retry shortly."""


@dataclass(frozen=True, slots=True)
class Claim:
    """The result of :meth:`Coordination.claim`; ``lease`` is set only when claimed."""

    status: ClaimStatus
    lease: Lease | None = None
    retry_after: float | None = None

    @property
    def claimed(self) -> bool:
        """True when the caller owns the lease now."""
        return self.status is ClaimStatus.CLAIMED


class RenewStatus(StrEnum):
    """Outcome of renewing a lease (the owner does this every few seconds)."""

    RENEWED = "renewed"
    """The lease was there under our token; its deadline moved."""

    REASSERTED = "reasserted"
    """The lease was missing (the backend lost it, or it expired while we were cut off)
    and was put back regardless of the limit: the call is real."""

    FENCED = "fenced"
    """A newer token owns this call (it was claimed elsewhere): this copy must stop."""

    RELEASED = "released"
    """The call's lease was released already: the call is over."""


class Command(StrEnum):
    """What one gateway can ask the owner of a call to do."""

    HANGUP = "hangup"


@dataclass(frozen=True, slots=True)
class CallCommand:
    """A command delivered to the instance that owns ``call_id``.

    Attributes:
        call_id: the call to act on.
        command: what to do.
        reason: a stable code saying why (e.g. ``balance_depleted``), or None.
    """

    call_id: str
    command: Command
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RateDecision:
    """One hit against a fixed-window rate limit.

    Attributes:
        allowed: whether this hit is within the limit (refused hits are not counted).
        remaining: hits left in the current window after this one.
        reset_after: seconds until the window ends.
    """

    allowed: bool
    remaining: int
    reset_after: float


def check_name(field: str, value: object) -> str:
    """Return ``value`` if it is a usable id (tenant, call, instance, key).

    Raises:
        ValidationError: not a string, empty, too long, or containing whitespace or
            control characters (they would make key names ambiguous in logs and Redis).
    """
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "expected a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise ValidationError(field, f"expected at most {MAX_NAME_LENGTH} characters")
    if not value.isprintable() or any(ch.isspace() for ch in value):
        raise ValidationError(field, "expected no whitespace or control characters")
    return value


def check_ttl(field: str, value: object) -> float:
    """Return ``value`` (seconds) if it is a positive duration of at most :data:`MAX_TTL`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, "expected a number of seconds")
    if not 0.001 <= value <= MAX_TTL:
        raise ValidationError(field, f"expected 0.001 to {MAX_TTL:.0f} seconds")
    return float(value)


def check_limit(value: object) -> int | None:
    """Return ``value`` if it is None (no cap) or an integer >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("limit", "expected None (no cap) or an integer >= 0")
    return value


def check_token(value: object) -> int:
    """Return ``value`` if it is a positive integer fencing token."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError("token", "expected a positive integer fencing token")
    return value


def to_ms(seconds: float) -> int:
    """Seconds to whole milliseconds, never below 1."""
    return max(1, round(seconds * 1000))


def new_instance_id() -> str:
    """A fresh, unique id for this gateway process: ``<host>-<pid>-<random>``.

    A restarted process must not reuse its old id: commands queued for the old process
    would otherwise reach calls it no longer has.
    """
    host = "".join(ch for ch in socket.gethostname() if ch.isalnum() or ch in "-.") or "gw"
    return f"{host[:60]}-{os.getpid()}-{secrets.token_hex(4)}"
