"""Redis coordination: leases, registry, commands and rate limits shared by a fleet.

Every lease change is one Lua script (``lua/*.lua``, each prefixed with
``lua/common.lua``) that reads Redis's own clock, so the gateways' clocks never matter
and no two operations interleave. Keys (all under one hash tag, so a Redis Cluster keeps
them in one slot and a script may touch them together)::

    {ns}:lease:<tenant>   ZSET  member call id, score lease deadline (ms, Redis clock)
    {ns}:call:<call id>   HASH  tenant, instance, token, state, prev; expires with the lease
    {ns}:fence            STRING last fencing token issued
    {ns}:epoch            HASH  id, ready_at: one lifetime of this Redis's data
    {ns}:cmd:<instance>   STREAM commands for the calls that instance owns

docs/coordination.md explains the scripts, the failure modes and the restart protocol.
Nothing a second instance needs lives only in this process: the local lease book is a
*copy*, kept so that leases can be put back after Redis loses its data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from importlib import resources
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.errors import ConflictError, CoordinationUnavailable, NotFoundError, ValidationError
from gateway.reasons import RefusalReason
from gateway.store.coordination.base import Clock, Coordination
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
    check_name,
    check_ttl,
    to_ms,
)

__all__ = ["RedisCoordination"]

logger = logging.getLogger("gateway.coordination")

_SCRIPTS = ("reserve", "claim", "renew", "release", "count", "epoch", "send", "rate")
_EPOCH_ATTEMPTS = 3  # reserve retries after re-asserting for a new epoch
_POOL_WAIT = 5.0  # seconds a caller may wait for a free pooled connection
_STREAM_MAXLEN = 10_000  # commands kept per instance stream (approximate trim)
_STREAM_TTL_MS = 86_400_000  # a dead instance's stream disappears a day after its last command


def _load_scripts() -> dict[str, str]:
    folder = resources.files("gateway.store.coordination").joinpath("lua")
    common = folder.joinpath("common.lua").read_text(encoding="utf-8")
    return {
        name: common + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        for name in _SCRIPTS
    }


class _Keys:
    """Key names under one hash tag ``{namespace}``."""

    def __init__(self, namespace: str) -> None:
        if "{" in namespace or "}" in namespace:
            raise ValidationError("namespace", "expected no braces (it becomes the hash tag)")
        self.tag = "{" + check_name("namespace", namespace) + "}"
        self.namespace = namespace
        self.fence = f"{self.tag}:fence"
        self.epoch = f"{self.tag}:epoch"

    def lease(self, tenant: str) -> str:
        return f"{self.tag}:lease:{tenant}"

    def call(self, call_id: str) -> str:
        return f"{self.tag}:call:{call_id}"

    def commands(self, instance_id: str) -> str:
        return f"{self.tag}:cmd:{instance_id}"

    def rate(self, key: str) -> str:
        # Rate limits are busier than leases: give each key its own hash tag (slot).
        return f"{self.namespace}:rate:{{{key}}}"


class RedisCoordination(Coordination):
    """Coordination on a Redis server shared by every gateway instance.

    Args:
        client: a ``redis.asyncio.Redis`` with ``decode_responses=True``; this object
            owns it and closes it in :meth:`close`. :meth:`from_url` builds a suitable one.
        instance_id: this gateway process's unique id.
        namespace: key prefix and hash tag; several deployments (or tests) can share a
            Redis under different namespaces.
        barrier: seconds admission stays closed after Redis lost its data, so that every
            gateway re-asserts its live leases first. Must exceed the renew interval plus
            the time a gateway needs to reconnect (reliability.md 1.3: 12 s for a 5 s renew).
        tombstone_ttl: seconds a released call's record is kept (blocks late renews).
        command_poll: seconds between reads of this instance's command stream (the
            most a hang-up command waits before its owner sees it).
        clock: local monotonic clock for the lease book.
    """

    def __init__(
        self,
        client: Redis,
        instance_id: str,
        *,
        namespace: str = "rymi",
        barrier: float = 12.0,
        tombstone_ttl: float = 120.0,
        command_poll: float = 0.1,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(instance_id, clock=clock)
        self._client = client
        self._keys = _Keys(namespace)
        self._barrier_ms = 0 if barrier == 0 else to_ms(check_ttl("barrier", barrier))
        self._tombstone_ms = to_ms(check_ttl("tombstone_ttl", tombstone_ttl))
        self._poll = check_ttl("command_poll", command_poll)
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(text) for name, text in _load_scripts().items()
        }
        self._epoch: str | None = None  # the epoch whose leases we have re-asserted
        self._resync_lock = asyncio.Lock()

    @classmethod
    def from_url(
        cls,
        url: str,
        instance_id: str,
        *,
        timeout: float = 0.5,
        max_connections: int = 64,
        **options: Any,
    ) -> RedisCoordination:
        """Connect to ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        Args:
            url: the Redis URL (may carry a password; it is never logged).
            instance_id: this gateway process's unique id.
            timeout: seconds to wait for a connection or a reply; an unreachable Redis
                turns into a refusal within about this long.
            max_connections: size of the connection pool.
            options: the keyword arguments of the constructor.
        """
        pool = BlockingConnectionPool.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One immediate retry on a dropped connection: after a Redis restart every
            # pooled socket is dead, and the retry reconnects. Timeouts are not retried,
            # so a hung Redis costs one timeout, not several.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            # A burst of answers waits for a free connection instead of failing.
            max_connections=max_connections,
            timeout=_POOL_WAIT,
        )
        client = Redis.from_pool(pool)
        return cls(client, instance_id, **options)

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await self._scripts[name](keys=keys, args=args)
        except RedisError as exc:
            _raise_if_cancelled()
            raise _unavailable(name, exc) from exc

    def _lease_keys(self, tenant: str, call_id: str) -> list[str]:
        k = self._keys
        return [k.lease(tenant), k.call(call_id), k.fence, k.epoch]

    async def ping(self) -> None:
        """Check Redis answers.

        Raises:
            CoordinationUnavailable: it does not.
        """
        try:
            await self._client.ping()
        except RedisError as exc:
            _raise_if_cancelled()
            raise _unavailable("ping", exc) from exc

    async def close(self) -> None:
        """Close the connections (leases stay in Redis until released or expired)."""
        await self._client.aclose()

    # -- leases -----------------------------------------------------------------------------

    async def _reserve(
        self, tenant: str, call_id: str, limit: int | None, ttl_ms: int
    ) -> Admission:
        keys = self._lease_keys(tenant, call_id)
        cap = -1 if limit is None else limit
        for _ in range(_EPOCH_ATTEMPTS):
            args: list[str | int] = [tenant, call_id, self.instance_id, cap, ttl_ms]
            reply = await self._run("reserve", keys, [*args, self._barrier_ms, self._epoch or ""])
            kind = reply[0]
            if kind == "epoch":
                # New data lifetime (or first contact): our own leases go back in first,
                # so this instance can never admit on top of calls Redis forgot.
                await self._resync(str(reply[1]))
                continue
            if kind == "warming":
                return Admission.refuse(
                    RefusalReason.COORDINATION_UNAVAILABLE, retry_after=int(reply[2]) / 1000
                )
            if kind == "conflict":
                raise ConflictError(f"call_id {call_id!r} is another tenant's, live or ended")
            if kind == "full":
                return Admission.refuse(RefusalReason.QUOTA_CONCURRENT_CALLS, int(reply[1]))
            if kind == "exists":
                lease = Lease(tenant, call_id, int(reply[1]), reply[2], LeaseState(reply[3]))
                return Admission.admit(lease, int(reply[4]))
            lease = Lease(tenant, call_id, int(reply[1]), self.instance_id, LeaseState.RESERVED)
            return Admission.admit(lease, int(reply[2]))
        logger.warning("coordination epoch kept changing while admitting; refusing")
        return Admission.refuse(RefusalReason.COORDINATION_UNAVAILABLE)

    async def _claim(self, tenant: str, call_id: str, token: int, ttl_ms: int) -> Claim:
        args: list[str | int] = [
            tenant,
            call_id,
            self.instance_id,
            str(token),
            ttl_ms,
            self._barrier_ms,
        ]
        reply = await self._run("claim", self._lease_keys(tenant, call_id), args)
        kind = reply[0]
        if kind == "ok":
            lease = Lease(tenant, call_id, int(reply[1]), self.instance_id, LeaseState.LIVE)
            return Claim(ClaimStatus.CLAIMED, lease)
        if kind == "warming":
            return Claim(ClaimStatus.WARMING, retry_after=int(reply[1]) / 1000)
        return Claim(ClaimStatus(kind))

    async def _renew(
        self, tenant: str, call_id: str, token: int, state: LeaseState, ttl_ms: int
    ) -> RenewStatus:
        status, epoch = await self._renew_once(tenant, call_id, token, state, ttl_ms)
        if epoch != self._epoch:
            # Redis lost its data (or this is our first contact with it): put back every
            # lease this instance holds now, not one per renew cycle.
            await self._resync(epoch)
        return status

    async def _renew_once(
        self, tenant: str, call_id: str, token: int, state: LeaseState, ttl_ms: int
    ) -> tuple[RenewStatus, str]:
        args: list[str | int] = [tenant, call_id, self.instance_id, str(token), state.value]
        reply = await self._run(
            "renew", self._lease_keys(tenant, call_id), [*args, ttl_ms, self._barrier_ms]
        )
        return RenewStatus(reply[0]), str(reply[1])

    async def _heartbeat(self) -> None:
        epoch = str(await self._run("epoch", [self._keys.epoch], [self._barrier_ms]))
        if epoch != self._epoch:
            await self._resync(epoch)

    async def _resync(self, epoch: str) -> None:
        """Re-assert every lease in the local book into ``epoch`` (once per epoch)."""
        async with self._resync_lock:
            if self._epoch == epoch:
                return
            now = self._clock()
            entries = self._book.entries(now)
            for entry in entries:
                lease = entry.lease
                held = self._book.get(lease.call_id)
                if held is None or held.lease.token != lease.token:
                    continue  # released (or handed over) meanwhile
                ttl_ms = entry.ttl_ms
                if lease.state is LeaseState.RESERVED:  # only what is left of it
                    ttl_ms = max(1, round((entry.deadline - now) * 1000))
                status, _ = await self._renew_once(
                    lease.tenant, lease.call_id, lease.token, lease.state, ttl_ms
                )
                await self._settle(lease, ttl_ms, status)
            if self._epoch is not None:
                logger.warning(
                    "coordination data epoch changed (Redis restarted or failed over): "
                    "re-asserted %d leases",
                    len(entries),
                )
            self._epoch = epoch

    async def _release(self, tenant: str, call_id: str, token: int) -> bool:
        keys = self._lease_keys(tenant, call_id)[:2]
        reply = await self._run("release", keys, [tenant, call_id, str(token), self._tombstone_ms])
        return bool(reply)

    async def _active_calls(self, tenant: str) -> int:
        return int(await self._run("count", [self._keys.lease(tenant)], []))

    # -- registry and commands --------------------------------------------------------------

    async def _owner_of(self, call_id: str) -> str | None:
        try:
            instance, state = await self._client.hmget(
                self._keys.call(call_id), ["instance", "state"]
            )
        except RedisError as exc:
            _raise_if_cancelled()
            raise _unavailable("owner", exc) from exc
        if instance is None or state == "released":
            return None
        return str(instance)

    async def _send(self, command: CallCommand) -> None:
        owner = await self._owner_of(command.call_id)
        for _ in range(_EPOCH_ATTEMPTS):
            if owner is None:
                break
            keys = [self._keys.call(command.call_id), self._keys.commands(owner)]
            args = [owner, command.call_id, command.command.value, command.reason or ""]
            reply = await self._run("send", keys, [*args, _STREAM_MAXLEN, _STREAM_TTL_MS])
            if reply[0] == "sent":
                return
            owner = str(reply[1]) if reply[0] == "moved" else None
        raise NotFoundError(f"no live call {command.call_id!r}")

    async def _commands(self, instance_id: str) -> AsyncGenerator[CallCommand, None]:
        # Polling, not XREAD BLOCK: a cancelled blocking read can leave redis-py waiting
        # on a dead socket, and a poll every 100 ms is a negligible load for one
        # reader per instance. Cancellation then lands in asyncio.sleep almost always.
        key = self._keys.commands(instance_id)
        last: str | None = None
        pause = self._poll
        while True:
            _raise_if_cancelled()
            try:
                if last is None:  # start after what is there now: old commands are stale
                    tail = await self._client.xrevrange(key, count=1)
                    last = str(tail[0][0]) if tail else "0-0"
                reply = await self._client.xread({key: last}, count=100)
            except RedisError as exc:
                _raise_if_cancelled()
                # A live instance keeps listening through an outage; the stream keeps
                # what was sent meanwhile (as long as Redis keeps its data).
                logger.warning("command stream read failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            pause = self._poll
            entries = _stream_entries(reply)
            for entry_id, fields in entries:
                last = entry_id
                command = _parse_command(fields)
                if command is not None:
                    yield command
            if not entries:
                await asyncio.sleep(self._poll)

    # -- rate limits ------------------------------------------------------------------------

    async def _hit(self, key: str, limit: int, window_ms: int) -> RateDecision:
        allowed, remaining, left_ms = await self._run(
            "rate", [self._keys.rate(key)], [limit, window_ms]
        )
        return RateDecision(bool(allowed), int(remaining), int(left_ms) / 1000)


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation the driver turned into an error.

    A cancel that races a socket timeout can surface as a redis ``TimeoutError`` or
    ``ConnectionError`` (asyncio.timeout on Python 3.11); swallowing it would keep a
    cancelled task (a renew loop, a command reader) running forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _unavailable(operation: str, exc: RedisError) -> CoordinationUnavailable:
    # The driver's message may name the server; the cause keeps it for the traceback.
    return CoordinationUnavailable(f"coordination {operation} failed: {type(exc).__name__}")


def _stream_entries(reply: Any) -> list[tuple[str, Mapping[str, str]]]:
    """Entries of an XREAD reply, in RESP2 (list) or RESP3 (dict) shape."""
    streams = reply.items() if isinstance(reply, dict) else (reply or [])
    entries: list[tuple[str, Mapping[str, str]]] = []
    for _key, batch in streams:
        # RESP3 nests the entries one level deeper.
        rows = batch[0] if batch and isinstance(batch[0], list) else batch
        entries.extend((str(entry_id), fields) for entry_id, fields in rows)
    return entries


def _parse_command(fields: Mapping[str, str]) -> CallCommand | None:
    try:
        return CallCommand(
            call_id=fields["call_id"],
            command=Command(fields["command"]),
            reason=fields.get("reason") or None,
        )
    except (KeyError, ValueError):
        # Written by a newer gateway version, or by hand: skip it rather than stop
        # delivering every command after it.
        logger.warning("skipping an unreadable command stream entry")
        return None
