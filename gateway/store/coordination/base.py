"""The coordination interface shared by the in-process and the Redis backends.

:class:`Coordination` is a template: its public methods check their arguments, keep the
instance's local :class:`~gateway.store.coordination.book.LeaseBook` up to date, and
call one backend hook (``_reserve``, ``_claim``, ...) that does the atomic work. Both
backends pass the same contract suite (tests/coordination/).

Call flow (ARCHITECTURE.md "One call, end to end")::

    answer   admit()/reserve()  -> Admission (lease RESERVED, short TTL, e.g. 30 s)
    media    claim()            -> Claim (lease LIVE under a fresh token; any instance)
    live     renew_all()/renew()every few seconds, TTL e.g. 15 s
    end      release()          -> the slot is free at once; a second release is a no-op

Errors: a backend that cannot be reached raises
:class:`~gateway.errors.CoordinationUnavailable` (the driver's error is ``__cause__``);
:meth:`Coordination.admit` turns that into a ``coordination_unavailable`` refusal, so
admission fails closed. Bad arguments raise :class:`~gateway.errors.ValidationError`.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable

from gateway.errors import CoordinationUnavailable, ValidationError
from gateway.reasons import RefusalReason
from gateway.store.coordination.book import LeaseBook
from gateway.store.coordination.types import (
    Admission,
    CallCommand,
    Claim,
    Command,
    Lease,
    LeaseState,
    RateDecision,
    RenewStatus,
    check_limit,
    check_name,
    check_token,
    check_ttl,
    to_ms,
)

__all__ = ["Clock", "Coordination"]

Clock = Callable[[], float]
"""A monotonic clock in seconds (``time.monotonic`` unless a test injects one)."""

logger = logging.getLogger("gateway.coordination")

_RENEW_BATCH = 64  # concurrent renew scripts per batch: bounds connections, not latency


class Coordination(ABC):
    """Concurrency leases, the live-call registry, commands and rate limits for one instance.

    Args:
        instance_id: this gateway process's unique id (see ``new_instance_id()``).
        clock: local monotonic clock, used only for the local lease book.
    """

    def __init__(self, instance_id: str, *, clock: Clock) -> None:
        self._instance_id = check_name("instance_id", instance_id)
        self._clock = clock
        self._book = LeaseBook()

    @property
    def instance_id(self) -> str:
        """This instance's id: the owner recorded for the calls it claims."""
        return self._instance_id

    # -- leases ---------------------------------------------------------------------------

    async def reserve(
        self, tenant: str, call_id: str, *, limit: int | None, ttl: float
    ) -> Admission:
        """Take a slot for a call being answered, if the tenant is under ``limit``.

        Reserving a call id that is already reserved for the same tenant returns that
        lease (a carrier retrying its webhook gets the same answer) and takes no slot.
        The token of a *live* call is never handed out again (it could take the call over).

        Args:
            tenant: tenant id.
            call_id: our id for the call.
            limit: the tenant's ``max_concurrent_calls``; None means no cap.
            ttl: seconds the reservation lives unless claimed (e.g. 30).

        Returns:
            An admission with the lease, or a refusal (``quota_exceeded.concurrent_calls``,
            or ``coordination_unavailable`` while a backend that lost its data warms up).

        Raises:
            CoordinationUnavailable: the backend cannot be reached.
            ConflictError: the call id belongs to another tenant, is live or has ended.
            ValidationError: bad arguments.
        """
        check_name("tenant", tenant)
        check_name("call_id", call_id)
        checked_limit = check_limit(limit)
        ttl_ms = to_ms(check_ttl("ttl", ttl))
        admission = await self._reserve(tenant, call_id, checked_limit, ttl_ms)
        lease = admission.lease
        if lease is not None and lease.instance_id == self._instance_id:
            self._book.hold(lease, ttl_ms, self._clock())
        return admission

    async def admit(self, tenant: str, call_id: str, *, limit: int | None, ttl: float) -> Admission:
        """:meth:`reserve`, failing closed: an unreachable backend is a refusal.

        Admission control must not admit calls it cannot count (reliability.md 1.3):
        unlike a request rate limiter, a wrong "yes" here costs the tenant money.
        """
        try:
            return await self.reserve(tenant, call_id, limit=limit, ttl=ttl)
        except CoordinationUnavailable as exc:
            logger.warning("admission refused, coordination unavailable: %s", exc)
            return Admission.refuse(RefusalReason.COORDINATION_UNAVAILABLE)

    async def claim(self, tenant: str, call_id: str, token: int, *, ttl: float) -> Claim:
        """Take over a reserved (or live) lease when its media stream starts here.

        Any instance may claim, given the token the answering instance put in the call
        token. The lease becomes LIVE, owned by this instance, under a fresh token; the
        old token can no longer renew or release it. Retrying a claim that already
        succeeded on this instance returns the same lease.

        Raises:
            CoordinationUnavailable: the backend cannot be reached.
            ValidationError: bad arguments.
        """
        _check_lease_ref(tenant, call_id, token)
        ttl_ms = to_ms(check_ttl("ttl", ttl))
        claim = await self._claim(tenant, call_id, token, ttl_ms)
        if claim.lease is not None:
            self._book.hold(claim.lease, ttl_ms, self._clock())
        return claim

    async def renew(self, tenant: str, call_id: str, token: int, *, ttl: float) -> RenewStatus:
        """Push a held lease's deadline ``ttl`` seconds ahead.

        A missing lease is put back (:attr:`RenewStatus.REASSERTED`), since the call is
        real; a newer token wins (:attr:`RenewStatus.FENCED`). Failures are the caller's
        to judge: a live call survives a few failed renews.

        Raises:
            CoordinationUnavailable: the backend cannot be reached.
            ValidationError: bad arguments.
        """
        _check_lease_ref(tenant, call_id, token)
        ttl_ms = to_ms(check_ttl("ttl", ttl))
        held = self._book.get(call_id)
        same = held is not None and held.lease.token == token
        state = held.lease.state if held is not None and same else LeaseState.LIVE
        status = await self._renew(tenant, call_id, token, state, ttl_ms)
        self._note_renewal(Lease(tenant, call_id, token, self._instance_id, state), ttl_ms, status)
        return status

    async def renew_all(self, *, ttl: float) -> dict[str, RenewStatus]:
        """Renew every live lease this instance holds; returns the status per call id.

        Call it every renew interval (e.g. 5 s for a 15 s TTL) even with no live calls:
        it is also how an instance notices that the backend lost its data and puts back
        the leases it holds, reservations included.

        Raises:
            CoordinationUnavailable: the backend could not be reached for some of them
                (the others were renewed; the loop simply tries again next time).
        """
        ttl_ms = to_ms(check_ttl("ttl", ttl))
        await self._heartbeat()
        entries = self._book.live()
        results: dict[str, RenewStatus] = {}
        failure: CoordinationUnavailable | None = None
        for start in range(0, len(entries), _RENEW_BATCH):
            batch = [entry.lease for entry in entries[start : start + _RENEW_BATCH]]
            outcomes = await asyncio.gather(
                *(self._renew(ls.tenant, ls.call_id, ls.token, ls.state, ttl_ms) for ls in batch),
                return_exceptions=True,
            )
            for lease, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, CoordinationUnavailable):
                    failure = failure or outcome
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    await self._settle(lease, ttl_ms, outcome)
                    results[lease.call_id] = outcome
        if failure is not None:
            raise failure
        return results

    async def release(self, tenant: str, call_id: str, token: int) -> bool:
        """Free the slot held under ``token``. Returns False (and changes nothing) when the
        lease is already gone or belongs to a newer token: releasing twice is a no-op.

        Raises:
            CoordinationUnavailable: the backend cannot be reached (the lease then
                expires by itself within its TTL).
            ValidationError: bad arguments.
        """
        _check_lease_ref(tenant, call_id, token)
        # Forget it locally first, so that a re-assert running meanwhile cannot revive it.
        self._book.drop(call_id, token)
        return await self._release(tenant, call_id, token)

    async def active_calls(self, tenant: str) -> int:
        """Leases (reserved + live, unexpired) the tenant holds right now."""
        return await self._active_calls(check_name("tenant", tenant))

    def held(self) -> list[Lease]:
        """The leases this instance holds, from its local book."""
        return [entry.lease for entry in self._book.entries(self._clock())]

    async def _settle(self, lease: Lease, ttl_ms: int, status: RenewStatus) -> None:
        """Record a background renew or re-assert of a lease from the book.

        If the call was released while the script was in flight, the script may have put
        the lease back after the release: take it out again rather than let the renew
        loop keep it alive.
        """
        if status not in (RenewStatus.RENEWED, RenewStatus.REASSERTED):
            self._book.drop(lease.call_id, lease.token)
        elif not self._book.refresh(lease, ttl_ms, self._clock()):
            await self._release(lease.tenant, lease.call_id, lease.token)

    def _note_renewal(self, lease: Lease, ttl_ms: int, status: RenewStatus) -> None:
        if status in (RenewStatus.RENEWED, RenewStatus.REASSERTED):
            self._book.hold(lease, ttl_ms, self._clock())
        else:
            self._book.drop(lease.call_id, lease.token)

    # -- registry and commands --------------------------------------------------------------

    async def owner_of(self, call_id: str) -> str | None:
        """The instance that owns ``call_id``'s lease, or None if it has none."""
        return await self._owner_of(check_name("call_id", call_id))

    async def send_command(
        self, call_id: str, command: Command, *, reason: str | None = None
    ) -> None:
        """Deliver ``command`` to the instance that owns ``call_id``.

        Raises:
            NotFoundError: no instance owns that call (no lease, expired or released).
            CoordinationUnavailable: the backend cannot be reached.
            ValidationError: bad arguments.
        """
        check_name("call_id", call_id)
        if not isinstance(command, Command):
            raise ValidationError("command", f"expected one of {[c.value for c in Command]}")
        if reason is not None:
            check_name("reason", reason)
        await self._send(CallCommand(call_id, command, reason))

    def commands(self, instance_id: str | None = None) -> AsyncGenerator[CallCommand, None]:
        """Commands for the calls owned by ``instance_id`` (default: this instance).

        The generator runs until closed (``contextlib.aclosing``) or its task is
        cancelled; start it before claiming calls. Use one subscriber per instance id.
        """
        return self._commands(check_name("instance_id", instance_id or self._instance_id))

    # -- rate limits ----------------------------------------------------------------------

    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        """Count one hit on ``key`` in a fixed window of ``window`` seconds.

        Refused hits are not counted, so a client hammering a limit gets in again as
        soon as the window rolls over.
        """
        check_name("key", key)
        checked = check_limit(limit)
        if not checked:
            raise ValidationError("limit", "expected an integer >= 1")
        return await self._hit(key, checked, to_ms(check_ttl("window", window)))

    # -- lifecycle --------------------------------------------------------------------------

    @abstractmethod
    async def ping(self) -> None:
        """Check the backend answers (readiness).

        Raises:
            CoordinationUnavailable: it does not.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release connections; leases stay until released or expired."""

    # -- backend hooks (arguments already checked) ------------------------------------------

    @abstractmethod
    async def _heartbeat(self) -> None:
        """Once per renew cycle: notice a backend that lost its data."""

    @abstractmethod
    async def _reserve(
        self, tenant: str, call_id: str, limit: int | None, ttl_ms: int
    ) -> Admission: ...

    @abstractmethod
    async def _claim(self, tenant: str, call_id: str, token: int, ttl_ms: int) -> Claim: ...

    @abstractmethod
    async def _renew(
        self, tenant: str, call_id: str, token: int, state: LeaseState, ttl_ms: int
    ) -> RenewStatus: ...

    @abstractmethod
    async def _release(self, tenant: str, call_id: str, token: int) -> bool: ...

    @abstractmethod
    async def _active_calls(self, tenant: str) -> int: ...

    @abstractmethod
    async def _owner_of(self, call_id: str) -> str | None: ...

    @abstractmethod
    async def _send(self, command: CallCommand) -> None: ...

    @abstractmethod
    def _commands(self, instance_id: str) -> AsyncGenerator[CallCommand, None]: ...

    @abstractmethod
    async def _hit(self, key: str, limit: int, window_ms: int) -> RateDecision: ...


def _check_lease_ref(tenant: str, call_id: str, token: int) -> None:
    """Validate the (tenant, call id, fencing token) that names a held lease."""
    check_name("tenant", tenant)
    check_name("call_id", call_id)
    check_token(token)
