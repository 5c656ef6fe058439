"""Lease contract: reserve, claim, renew, release, on every backend."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import ConflictError, ValidationError
from gateway.reasons import RefusalReason
from gateway.store.coordination import ClaimStatus, LeaseState, RenewStatus
from tests.coordination.conftest import TTL, Cluster


async def test_200_concurrent_reserves_for_a_limit_of_20_admit_exactly_20(
    cluster: Cluster,
) -> None:
    gateways = [cluster.instance(f"gw{i}") for i in range(4)]
    results = await asyncio.gather(
        *(gateways[i % 4].reserve("acme", f"call-{i}", limit=20, ttl=30) for i in range(200))
    )
    admitted = [r for r in results if r.admitted]
    refused = [r for r in results if not r.admitted]
    assert len(admitted) == 20
    assert len(refused) == 180
    assert {r.reason for r in refused} == {RefusalReason.QUOTA_CONCURRENT_CALLS}
    assert await gateways[0].active_calls("acme") == 20
    # Tokens are unique and every refused call left nothing behind.
    assert len({r.lease.token for r in admitted if r.lease}) == 20
    admitted_ids = {r.lease.call_id for r in admitted if r.lease}
    for i in range(200):
        owner = await gateways[1].owner_of(f"call-{i}")
        assert (owner is not None) == (f"call-{i}" in admitted_ids)


async def test_no_limit_means_no_cap_and_zero_refuses_everything(cluster: Cluster) -> None:
    gw = cluster.instance("gw")
    uncapped = await asyncio.gather(
        *(gw.reserve("big", f"c{i}", limit=None, ttl=30) for i in range(60))
    )
    assert all(r.admitted for r in uncapped)
    assert await gw.active_calls("big") == 60
    closed = await gw.reserve("small", "c-zero", limit=0, ttl=30)
    assert closed.reason is RefusalReason.QUOTA_CONCURRENT_CALLS
    assert await gw.active_calls("small") == 0


async def test_limits_are_per_tenant(cluster: Cluster) -> None:
    gw = cluster.instance("gw")
    assert (await gw.reserve("t1", "a", limit=2, ttl=30)).active == 1
    assert (await gw.reserve("t2", "b", limit=2, ttl=30)).active == 1
    assert (await gw.reserve("t1", "c", limit=2, ttl=30)).active == 2
    refused = await gw.reserve("t1", "d", limit=2, ttl=30)
    assert refused.reason is RefusalReason.QUOTA_CONCURRENT_CALLS
    assert refused.active == 2
    assert await gw.active_calls("t1") == 2
    assert await gw.active_calls("t2") == 1


async def test_a_retried_reserve_returns_the_same_lease_and_takes_no_slot(
    cluster: Cluster,
) -> None:
    gw = cluster.instance("gw")
    first = await gw.reserve("acme", "call", limit=1, ttl=30)
    again = await gw.reserve("acme", "call", limit=1, ttl=30)
    assert again.admitted
    assert again.lease == first.lease
    assert await gw.active_calls("acme") == 1


async def test_a_call_id_of_another_tenant_a_live_or_an_ended_call_is_a_conflict(
    cluster: Cluster,
) -> None:
    gw = cluster.instance("gw")
    admission = await gw.reserve("t1", "call", limit=5, ttl=30)
    assert admission.lease is not None
    with pytest.raises(ConflictError):
        await gw.reserve("t2", "call", limit=5, ttl=30)
    assert await gw.active_calls("t2") == 0
    live = (await gw.claim("t1", "call", admission.lease.token, ttl=30)).lease
    assert live is not None
    with pytest.raises(ConflictError):  # a live call's token is never handed out again
        await gw.reserve("t1", "call", limit=5, ttl=30)
    assert await gw.release("t1", "call", live.token)
    with pytest.raises(ConflictError):
        await gw.reserve("t1", "call", limit=5, ttl=30)
    assert await gw.active_calls("t1") == 0


async def test_release_frees_the_slot_and_twice_is_a_no_op(cluster: Cluster) -> None:
    gw = cluster.instance("gw")
    lease = (await gw.reserve("acme", "call", limit=1, ttl=30)).lease
    assert lease is not None
    assert await gw.release("acme", "call", lease.token) is True
    assert await gw.release("acme", "call", lease.token) is False
    assert await gw.release("acme", "never-reserved", 12345) is False
    assert await gw.active_calls("acme") == 0
    assert await gw.owner_of("call") is None
    assert (await gw.reserve("acme", "next", limit=1, ttl=30)).admitted
    assert await gw.active_calls("acme") == 1


async def test_many_releases_never_drive_the_count_below_zero(cluster: Cluster) -> None:
    gw = cluster.instance("gw")
    leases = [(await gw.reserve("acme", f"c{i}", limit=3, ttl=30)).lease for i in range(3)]
    assert all(leases)
    releases = [
        gw.release("acme", lease.call_id, lease.token)
        for lease in leases
        if lease is not None
        for _ in range(4)
    ]
    done = await asyncio.gather(*releases)
    assert sum(done) == 3  # exactly one release per lease took effect
    assert await gw.active_calls("acme") == 0
    admitted = await asyncio.gather(
        *(gw.reserve("acme", f"d{i}", limit=3, ttl=30) for i in range(6))
    )
    assert sum(a.admitted for a in admitted) == 3


async def test_claim_on_another_instance_makes_it_the_owner_under_a_new_token(
    cluster: Cluster,
) -> None:
    answering, media = cluster.instance("answering"), cluster.instance("media")
    reserved = (await answering.reserve("acme", "call", limit=1, ttl=30)).lease
    assert reserved is not None
    assert reserved.state is LeaseState.RESERVED
    assert await answering.owner_of("call") == "answering"
    claim = await media.claim("acme", "call", reserved.token, ttl=TTL)
    assert claim.status is ClaimStatus.CLAIMED
    assert claim.lease is not None
    assert claim.lease.token > reserved.token
    assert claim.lease.instance_id == "media"
    assert claim.lease.state is LeaseState.LIVE
    assert await answering.owner_of("call") == "media"
    assert await answering.active_calls("acme") == 1  # the same slot, not a second one
    assert media.held() == [claim.lease]


async def test_a_claim_retried_by_the_same_instance_returns_the_same_lease(
    cluster: Cluster,
) -> None:
    gw, media = cluster.instance("gw"), cluster.instance("media")
    reserved = (await gw.reserve("acme", "call", limit=1, ttl=30)).lease
    assert reserved is not None
    first = await media.claim("acme", "call", reserved.token, ttl=TTL)
    again = await media.claim("acme", "call", reserved.token, ttl=TTL)
    assert again == first
    other = await cluster.instance("other").claim("acme", "call", reserved.token, ttl=TTL)
    assert other.status is ClaimStatus.FENCED
    assert await gw.owner_of("call") == "media"


async def test_claims_of_unknown_expired_or_foreign_leases_are_gone(cluster: Cluster) -> None:
    gw = cluster.instance("gw")
    assert (await gw.claim("acme", "nope", 1, ttl=TTL)).status is ClaimStatus.GONE
    reserved = (await gw.reserve("acme", "call", limit=2, ttl=TTL)).lease
    assert reserved is not None
    assert (await gw.claim("other", "call", reserved.token, ttl=TTL)).status is ClaimStatus.GONE
    assert (await gw.claim("acme", "call", reserved.token + 1, ttl=TTL)).status is (
        ClaimStatus.FENCED
    )
    await cluster.pass_time(TTL + 0.1)
    late = await gw.claim("acme", "call", reserved.token, ttl=TTL)
    assert late.status is ClaimStatus.GONE
    assert late.lease is None
    assert await gw.active_calls("acme") == 0


async def test_a_stale_token_can_neither_renew_nor_release(cluster: Cluster) -> None:
    answering, media = cluster.instance("answering"), cluster.instance("media")
    reserved = (await answering.reserve("acme", "call", limit=1, ttl=30)).lease
    assert reserved is not None
    claim = await media.claim("acme", "call", reserved.token, ttl=TTL)
    assert claim.lease is not None
    assert await answering.renew("acme", "call", reserved.token, ttl=TTL) is RenewStatus.FENCED
    assert await answering.release("acme", "call", reserved.token) is False
    assert await answering.active_calls("acme") == 1
    assert await answering.owner_of("call") == "media"
    assert await media.renew("acme", "call", claim.lease.token, ttl=TTL) is RenewStatus.RENEWED
    assert await media.release("acme", "call", claim.lease.token) is True
    assert await media.active_calls("acme") == 0


async def test_a_dead_owners_slots_return_within_one_ttl(cluster: Cluster) -> None:
    dead, alive, newcomer = (cluster.instance(n) for n in ("dead", "alive", "newcomer"))
    held = []
    for i, gw in enumerate([dead, dead, dead, alive]):
        reserved = (await gw.reserve("acme", f"c{i}", limit=4, ttl=30)).lease
        assert reserved is not None
        claim = await gw.claim("acme", f"c{i}", reserved.token, ttl=TTL)
        held.append(claim.lease)
    assert not (await newcomer.reserve("acme", "x", limit=4, ttl=30)).admitted

    # "dead" stops renewing; "alive" keeps renewing its one call.
    async def freed() -> bool:
        assert (await alive.renew_all(ttl=TTL)) == {"c3": RenewStatus.RENEWED}
        return await newcomer.active_calls("acme") == 1

    await cluster.eventually(freed, within=TTL * 2, what="the dead owner's slots return")
    assert await newcomer.owner_of("c0") is None
    assert await newcomer.owner_of("c3") == "alive"
    admitted = await asyncio.gather(
        *(newcomer.reserve("acme", f"n{i}", limit=4, ttl=30) for i in range(5))
    )
    assert sum(a.admitted for a in admitted) == 3


async def test_renewing_keeps_a_lease_alive_past_its_ttl(cluster: Cluster) -> None:
    gw, other = cluster.instance("gw"), cluster.instance("other")
    reserved = (await gw.reserve("acme", "call", limit=1, ttl=TTL)).lease
    assert reserved is not None
    lease = (await gw.claim("acme", "call", reserved.token, ttl=TTL)).lease
    assert lease is not None
    for _ in range(4):
        await cluster.pass_time(TTL / 2)
        assert await gw.renew("acme", "call", lease.token, ttl=TTL) is RenewStatus.RENEWED
    assert await other.active_calls("acme") == 1
    assert not (await other.reserve("acme", "x", limit=1, ttl=30)).admitted


async def test_an_owner_back_after_expiry_reasserts_its_real_call(cluster: Cluster) -> None:
    gw, other = cluster.instance("gw"), cluster.instance("other")
    reserved = (await gw.reserve("acme", "call", limit=1, ttl=TTL)).lease
    assert reserved is not None
    lease = (await gw.claim("acme", "call", reserved.token, ttl=TTL)).lease
    assert lease is not None
    await cluster.pass_time(TTL + 0.1)  # cut off for longer than the TTL
    assert (await other.reserve("acme", "x", limit=1, ttl=30)).admitted
    # The call still runs, so it counts again, even above the limit (reliability.md 1.3);
    # new admissions then wait until the count drops.
    assert await gw.renew("acme", "call", lease.token, ttl=TTL) is RenewStatus.REASSERTED
    assert await other.active_calls("acme") == 2
    assert await other.owner_of("call") == "gw"
    assert not (await other.reserve("acme", "y", limit=2, ttl=30)).admitted


async def test_a_renew_after_release_cannot_bring_the_lease_back(cluster: Cluster) -> None:
    gw = cluster.instance("gw")
    reserved = (await gw.reserve("acme", "call", limit=1, ttl=30)).lease
    assert reserved is not None
    lease = (await gw.claim("acme", "call", reserved.token, ttl=TTL)).lease
    assert lease is not None
    assert await gw.release("acme", "call", lease.token)
    assert await gw.renew("acme", "call", lease.token, ttl=TTL) is RenewStatus.RELEASED
    assert await gw.active_calls("acme") == 0
    assert gw.held() == []


async def test_renew_all_renews_only_live_leases_and_drops_fenced_ones(
    cluster: Cluster,
) -> None:
    a, b = cluster.instance("a"), cluster.instance("b")
    first = (await a.reserve("acme", "one", limit=None, ttl=30)).lease
    second = (await a.reserve("acme", "two", limit=None, ttl=30)).lease
    assert first is not None
    assert second is not None
    await a.claim("acme", "one", first.token, ttl=TTL)
    assert await a.renew_all(ttl=TTL) == {"one": RenewStatus.RENEWED}  # "two" is reserved
    held_one = next(lease for lease in a.held() if lease.call_id == "one")
    moved = await b.claim("acme", "one", held_one.token, ttl=TTL)  # handed over to b
    assert moved.claimed
    assert await a.renew_all(ttl=TTL) == {"one": RenewStatus.FENCED}
    assert [lease.call_id for lease in a.held()] == ["two"]
    assert await a.renew_all(ttl=TTL) == {}


@pytest.mark.parametrize(
    ("tenant", "call_id", "limit", "ttl"),
    [
        ("", "c", 1, 30),
        ("acme", "has space", 1, 30),
        ("acme", "x" * 201, 1, 30),
        ("acme", "c", -1, 30),
        ("acme", "c", True, 30),
        ("acme", "c", 1, 0),
        ("acme", "c", 1, -5),
        ("acme", "c", 1, 10**9),
    ],
)
async def test_bad_arguments_are_refused_and_leave_nothing(
    cluster: Cluster, tenant: str, call_id: str, limit: int, ttl: float
) -> None:
    gw = cluster.instance("gw")
    with pytest.raises(ValidationError):
        await gw.reserve(tenant, call_id, limit=limit, ttl=ttl)
    assert await gw.active_calls("acme") == 0
    assert gw.held() == []


async def test_bad_tokens_are_refused(cluster: Cluster) -> None:
    gw = cluster.instance("gw")
    for token in (0, -3, True, "12"):
        with pytest.raises(ValidationError, match="token"):
            await gw.claim("acme", "c", token, ttl=TTL)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="token"):
            await gw.release("acme", "c", token)  # type: ignore[arg-type]
