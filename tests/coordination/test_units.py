"""Pure parts: result types, argument checks, the local lease book, the in-process hub."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import CoordinationUnavailable, ValidationError
from gateway.reasons import RefusalReason
from gateway.store.coordination import (
    Admission,
    Lease,
    LeaseState,
    MemoryCoordination,
    MemoryHub,
    RenewStatus,
    new_instance_id,
    open_coordination,
)
from gateway.store.coordination.book import LeaseBook
from gateway.store.coordination.types import (
    check_limit,
    check_name,
    check_token,
    check_ttl,
    to_ms,
)
from tests.coordination.conftest import FakeClock

LEASE = Lease("acme", "call", 7, "gw", LeaseState.RESERVED)


def test_refusal_reasons_are_the_stable_codes() -> None:
    assert [r.value for r in RefusalReason] == [
        "quota_exceeded.concurrent_calls",
        "balance_depleted",
        "agent_not_published",
        "number_not_found",
        "carrier_not_connected",
        "coordination_unavailable",
    ]
    assert str(RefusalReason.QUOTA_CONCURRENT_CALLS) == "quota_exceeded.concurrent_calls"


def test_an_admission_holds_exactly_one_of_lease_and_reason() -> None:
    assert Admission.admit(LEASE, 1).admitted
    refused = Admission.refuse(RefusalReason.BALANCE_DEPLETED)
    assert not refused.admitted
    assert refused.reason is RefusalReason.BALANCE_DEPLETED
    with pytest.raises(ValueError, match="exactly one"):
        Admission(lease=None, reason=None)
    with pytest.raises(ValueError, match="exactly one"):
        Admission(lease=LEASE, reason=RefusalReason.BALANCE_DEPLETED)


@pytest.mark.parametrize(
    "value", [None, 3, "", "a b", "tab\there", "nl\n", "\x00", "x" * 201, b"bytes"]
)
def test_bad_names_are_refused_with_the_field_named(value: object) -> None:
    with pytest.raises(ValidationError, match=r"^tenant: expected"):
        check_name("tenant", value)


def test_good_names_pass_unchanged() -> None:
    for value in ("acme", "CA0123456789abcdef", "tenant:with/punctuation", "é" * 200):
        assert check_name("tenant", value) == value


@pytest.mark.parametrize("value", [0, -1, 0.0001, 86_401, True, "30", None, float("nan")])
def test_bad_ttls_are_refused(value: object) -> None:
    with pytest.raises(ValidationError, match=r"^ttl: expected"):
        check_ttl("ttl", value)


def test_ttls_and_milliseconds() -> None:
    assert check_ttl("ttl", 30) == 30.0
    assert to_ms(1.5) == 1500
    assert to_ms(0.0001) == 1


def test_limits_and_tokens() -> None:
    assert check_limit(None) is None
    assert check_limit(0) == 0
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValidationError, match="limit"):
            check_limit(bad)
    assert check_token(5) == 5
    for bad in (0, -1, False, 1.0):
        with pytest.raises(ValidationError, match="token"):
            check_token(bad)


def test_instance_ids_are_unique_and_usable_as_names() -> None:
    ids = {new_instance_id() for _ in range(50)}
    assert len(ids) == 50
    for instance_id in ids:
        assert check_name("instance_id", instance_id) == instance_id


def test_the_book_forgets_run_out_reservations_but_keeps_live_leases() -> None:
    book = LeaseBook()
    live = Lease("acme", "live", 9, "gw", LeaseState.LIVE)
    book.hold(LEASE, ttl_ms=1000, now=10.0)
    book.hold(live, ttl_ms=1000, now=10.0)
    assert [e.lease for e in book.entries(10.5)] == [LEASE, live]
    assert [e.lease for e in book.entries(11.0)] == [live]  # the reservation ran out
    assert [e.lease for e in book.entries(99.0)] == [live]
    assert [e.lease for e in book.live()] == [live]


def test_the_book_drops_only_the_token_it_holds() -> None:
    book = LeaseBook()
    book.hold(LEASE, ttl_ms=1000, now=0.0)
    book.drop("call", token=8)  # someone else's token: keep ours
    assert len(book) == 1
    book.drop("call", token=7)
    assert book.get("call") is None
    book.drop("never-held")
    assert len(book) == 0


async def test_the_hub_sweeps_expired_records_tombstones_and_windows() -> None:
    clock = FakeClock()
    hub = MemoryHub(clock=clock, tombstone_ttl=5.0)
    gw = hub.connect("gw")
    kept = (await gw.reserve("acme", "kept", limit=None, ttl=100)).lease
    ended = (await gw.reserve("acme", "ended", limit=None, ttl=100)).lease
    await gw.reserve("acme", "expires", limit=None, ttl=1)
    await gw.hit("key", limit=1, window=1)
    assert kept is not None
    assert ended is not None
    assert await gw.release("acme", "ended", ended.token)
    clock.advance(6.0)
    await gw.active_calls("other")  # any operation sweeps, at most once a second
    assert set(hub.calls) == {"kept"}
    assert hub.leases == {"acme": {"kept": pytest.approx(clock.now + 94.0)}}
    assert hub.windows == {}


async def test_a_closed_in_process_handle_is_unavailable_and_admission_fails_closed() -> None:
    gw = MemoryCoordination("gw")
    await gw.close()
    with pytest.raises(CoordinationUnavailable):
        await gw.ping()
    with pytest.raises(CoordinationUnavailable):
        await gw.reserve("acme", "call", limit=1, ttl=30)
    refusal = await gw.admit("acme", "call", limit=1, ttl=30)
    assert refusal.reason is RefusalReason.COORDINATION_UNAVAILABLE
    assert gw.held() == []


async def test_open_coordination_picks_in_process_without_a_redis_url() -> None:
    coord = open_coordination(None)
    assert isinstance(coord, MemoryCoordination)
    assert check_name("instance_id", coord.instance_id)
    assert (await coord.admit("acme", "call", limit=1, ttl=30)).admitted
    await coord.close()


class SlowReplies(MemoryCoordination):
    """Renews take effect at once, but their replies arrive only when ``gate`` opens."""

    gate: asyncio.Event
    applied: asyncio.Event

    async def _renew(
        self, tenant: str, call_id: str, token: int, state: LeaseState, ttl_ms: int
    ) -> RenewStatus:
        status = await super()._renew(tenant, call_id, token, state, ttl_ms)
        self.applied.set()
        await self.gate.wait()
        return status


async def test_a_release_during_a_renew_in_flight_is_not_undone() -> None:
    hub = MemoryHub(clock=FakeClock())
    gw = SlowReplies("gw", hub=hub)
    gw.gate, gw.applied = asyncio.Event(), asyncio.Event()
    reserved = (await gw.reserve("acme", "call", limit=1, ttl=30)).lease
    assert reserved is not None
    lease = (await gw.claim("acme", "call", reserved.token, ttl=10)).lease
    assert lease is not None
    renewing = asyncio.create_task(gw.renew_all(ttl=10))
    await gw.applied.wait()  # the renew has run; its reply is in flight
    assert await gw.release("acme", "call", lease.token)
    gw.gate.set()
    assert await renewing == {"call": RenewStatus.RENEWED}
    assert gw.held() == []  # the loop will not keep a released call alive
    assert await gw.active_calls("acme") == 0
