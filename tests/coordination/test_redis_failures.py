"""Redis going away and coming back empty: fail closed, recover, never over-admit.

Each test starts its own redis-server, kills it (SIGKILL, nothing saved) and starts it
again empty on the same port, as a crash of a Redis without persistence would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.exceptions import RedisError

from gateway.errors import CoordinationUnavailable
from gateway.reasons import RefusalReason
from gateway.store.coordination import ClaimStatus, Command, Lease, RenewStatus
from gateway.store.coordination.redis import RedisCoordination
from tests.coordination.test_registry import Inbox
from tests.helpers.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LIVE_TTL = 1.5
RENEW_EVERY = 0.2
BARRIER = 1.0
LIMIT = 20


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer.start() as srv:
        yield srv


@contextlib.asynccontextmanager
async def gateways(
    server: RedisServer, *names: str, barrier: float = BARRIER
) -> AsyncIterator[list[RedisCoordination]]:
    coords = [
        RedisCoordination.from_url(server.url, name, barrier=barrier, command_poll=0.05)
        for name in names
    ]
    try:
        yield coords
    finally:
        for coord in coords:
            await coord.close()


async def open_admission(gw: RedisCoordination) -> None:
    """Wait out the barrier of a brand-new Redis (a test setup step)."""
    for _ in range(100):
        with contextlib.suppress(CoordinationUnavailable):
            await gw.renew_all(ttl=LIVE_TTL)
            probe = await gw.admit("probe", "probe", limit=None, ttl=30)
            if probe.lease is not None:
                await gw.release("probe", "probe", probe.lease.token)
                return
        await asyncio.sleep(0.05)
    pytest.fail("admission never opened")


async def live_calls(gw: RedisCoordination, tenant: str, count: int, prefix: str) -> list[Lease]:
    leases = []
    for i in range(count):
        admission = await gw.reserve(tenant, f"{prefix}{i}", limit=LIMIT, ttl=30)
        assert admission.lease is not None, admission
        claim = await gw.claim(tenant, f"{prefix}{i}", admission.lease.token, ttl=LIVE_TTL)
        assert claim.lease is not None
        leases.append(claim.lease)
    return leases


async def renew_loop(gw: RedisCoordination, failures: list[str]) -> None:
    """What the call engine runs: renew every cycle; an outage is reported, not fatal."""
    while True:
        try:
            statuses = await gw.renew_all(ttl=LIVE_TTL)
            assert RenewStatus.FENCED not in statuses.values()
        except CoordinationUnavailable as exc:
            failures.append(str(exc))
        await asyncio.sleep(RENEW_EVERY)


async def restart_empty(server: RedisServer) -> None:
    server.kill()
    await asyncio.sleep(0.2)
    await asyncio.to_thread(server.launch)


async def test_a_restart_that_loses_every_lease_never_over_admits(server: RedisServer) -> None:
    async with gateways(server, "a", "b", "c") as (a, b, c):
        await open_admission(a)
        held = await live_calls(a, "acme", 12, "a") + await live_calls(b, "acme", 8, "b")
        assert not (await c.admit("acme", "before", limit=LIMIT, ttl=30)).admitted
        failures: list[str] = []
        loops = [asyncio.create_task(renew_loop(gw, failures)) for gw in (a, b, c)]
        try:
            await restart_empty(server)
            # Hammer admissions from every instance while the owners re-assert.
            admitted = []
            for round_no in range(40):
                results = await asyncio.gather(
                    *(
                        gw.admit(
                            "acme", f"new-{round_no}-{i}-{gw.instance_id}", limit=LIMIT, ttl=30
                        )
                        for gw in (a, b, c)
                        for i in range(5)
                    )
                )
                admitted += [r for r in results if r.admitted]
                reasons = {r.reason for r in results}
                assert reasons <= {
                    RefusalReason.COORDINATION_UNAVAILABLE,
                    RefusalReason.QUOTA_CONCURRENT_CALLS,
                }
                await asyncio.sleep(0.05)
            assert admitted == []  # the 20 live calls were never forgotten
            assert reasons == {RefusalReason.QUOTA_CONCURRENT_CALLS}  # and admission reopened
            assert await c.active_calls("acme") == LIMIT
            for lease in held:
                assert await c.owner_of(lease.call_id) == lease.instance_id
            # Slots freed after the restart are handed out exactly once.
            for lease in held[:5]:
                assert await a.release("acme", lease.call_id, lease.token)
            results = await asyncio.gather(
                *(c.admit("acme", f"after-{i}", limit=LIMIT, ttl=30) for i in range(50))
            )
            assert sum(r.admitted for r in results) == 5
            assert await c.active_calls("acme") == LIMIT
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        assert failures  # the outage was seen and survived by the renew loops


async def test_an_instance_puts_its_own_leases_back_before_it_admits(server: RedisServer) -> None:
    async with gateways(server, "a", barrier=0) as (a,):
        await live_calls(a, "acme", 3, "a")
        await restart_empty(server)
        refused = await a.admit("acme", "new", limit=3, ttl=30)
        # No renew ran since the restart: reserve noticed the new epoch itself.
        assert refused.reason is RefusalReason.QUOTA_CONCURRENT_CALLS
        assert await a.active_calls("acme") == 3


async def test_redis_down_refuses_new_calls_and_admission_reopens_by_itself(
    server: RedisServer,
) -> None:
    async with gateways(server, "gw", barrier=0.3) as (gw,):
        await open_admission(gw)
        (live,) = await live_calls(gw, "acme", 1, "live")
        server.kill()

        refusal = await gw.admit("acme", "while-down", limit=2, ttl=30)
        assert refusal.reason is RefusalReason.COORDINATION_UNAVAILABLE
        with pytest.raises(CoordinationUnavailable) as info:
            await gw.reserve("acme", "while-down", limit=2, ttl=30)
        assert isinstance(info.value.__cause__, RedisError)
        with pytest.raises(CoordinationUnavailable):
            await gw.renew("acme", live.call_id, live.token, ttl=LIVE_TTL)
        with pytest.raises(CoordinationUnavailable):
            await gw.ping()
        assert gw.held() == [live]  # the live call goes on

        await asyncio.to_thread(server.launch)
        admitted = None
        for _ in range(100):
            admission = await gw.admit("acme", "after", limit=2, ttl=30)
            if admission.admitted:
                admitted = admission
                break
            assert admission.reason is RefusalReason.COORDINATION_UNAVAILABLE
            await asyncio.sleep(0.05)
        assert admitted is not None
        await gw.ping()
        # The live call was re-asserted first, so it took the other slot.
        assert await gw.active_calls("acme") == 2
        assert not (await gw.admit("acme", "third", limit=2, ttl=30)).admitted
        assert await gw.renew("acme", live.call_id, live.token, ttl=LIVE_TTL) is (
            RenewStatus.RENEWED
        )


async def test_a_reservation_survives_the_restart_and_can_still_be_claimed(
    server: RedisServer,
) -> None:
    async with gateways(server, "answering", "media", barrier=0.5) as (answering, media):
        await open_admission(answering)
        reserved = (await answering.reserve("acme", "call", limit=1, ttl=30)).lease
        assert reserved is not None
        await restart_empty(server)
        claim = await media.claim("acme", "call", reserved.token, ttl=LIVE_TTL)
        assert claim.status is ClaimStatus.WARMING  # not re-asserted yet: retry, not reject
        assert claim.retry_after is not None
        await answering.renew_all(ttl=LIVE_TTL)  # the heartbeat notices the new epoch
        claim = await media.claim("acme", "call", reserved.token, ttl=LIVE_TTL)
        assert claim.status is ClaimStatus.CLAIMED
        assert claim.lease is not None
        assert claim.lease.token > reserved.token


async def test_tokens_issued_after_a_data_loss_exceed_every_earlier_token(
    server: RedisServer,
) -> None:
    async with gateways(server, "gw", barrier=0) as (gw,):
        before = (await gw.reserve("acme", "before", limit=None, ttl=30)).lease
        assert before is not None
        await gw.release("acme", "before", before.token)  # nothing to re-assert
        await restart_empty(server)
        after = (await gw.reserve("acme", "after", limit=None, ttl=30)).lease
        assert after is not None
        assert after.token > before.token


async def test_commands_reach_their_owner_again_after_an_outage(server: RedisServer) -> None:
    async with gateways(server, "owner", "sender", barrier=0) as (owner, sender):
        (live,) = await live_calls(owner, "acme", 1, "call")
        async with Inbox(owner) as inbox:
            await restart_empty(server)
            await owner.renew_all(ttl=LIVE_TTL)  # puts the lease (and its owner) back
            await sender.send_command(live.call_id, Command.HANGUP)
            assert (await inbox.next()).call_id == live.call_id


async def test_a_hung_redis_is_a_refusal_and_a_late_reservation_expires(
    server: RedisServer,
) -> None:
    async with gateways(server, "gw", barrier=0) as (gw,):
        await open_admission(gw)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)  # alive but silent: replies time out
        try:
            refusal = await gw.admit("acme", "hung", limit=None, ttl=1)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert refusal.reason is RefusalReason.COORDINATION_UNAVAILABLE
        assert gw.held() == []
        # The timed-out script may still run once Redis wakes up; the reservation it
        # makes is never claimed, so it expires within its TTL.
        for _ in range(60):
            if await gw.owner_of("hung") is None:
                break
            await asyncio.sleep(0.05)
        assert await gw.owner_of("hung") is None
        assert await gw.active_calls("acme") == 0
        assert (await gw.admit("acme", "after", limit=1, ttl=30)).admitted
