"""Live-call registry, command channel, rate limits and readiness, on every backend."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import aclosing

import pytest

from gateway.errors import NotFoundError, ValidationError
from gateway.store.coordination import CallCommand, Command, Coordination, Lease
from tests.coordination.conftest import TTL, Cluster

QUIET = 0.3
"""Seconds an instance listens to show that a command did not reach it."""


async def _live_call(owner: Coordination, tenant: str, call_id: str) -> Lease:
    reserved = (await owner.reserve(tenant, call_id, limit=None, ttl=30)).lease
    assert reserved is not None
    lease = (await owner.claim(tenant, call_id, reserved.token, ttl=TTL)).lease
    assert lease is not None
    return lease


class Inbox:
    """Reads an instance's commands in a background task, as a gateway would.

    (Cancelling a pending ``anext()`` would close the generator, so tests never do.)
    """

    def __init__(self, coord: Coordination) -> None:
        self.received: asyncio.Queue[CallCommand] = asyncio.Queue()
        self._task = asyncio.create_task(self._read(coord))

    async def _read(self, coord: Coordination) -> None:
        async with aclosing(coord.commands()) as commands:
            async for command in commands:
                self.received.put_nowait(command)

    async def next(self) -> CallCommand:
        return await asyncio.wait_for(self.received.get(), timeout=5)

    async def nothing_arrives(self) -> None:
        await asyncio.sleep(QUIET)
        assert self.received.empty()

    async def __aenter__(self) -> Inbox:
        await asyncio.sleep(0.05)  # let the reader start (Redis: it reads from "now" on)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_a_command_reaches_the_owner_of_the_call_and_no_one_else(
    cluster: Cluster,
) -> None:
    a, b, sender = cluster.instance("a"), cluster.instance("b"), cluster.instance("sender")
    await _live_call(a, "acme", "call-a")
    await _live_call(b, "acme", "call-b")
    async with Inbox(a) as to_a, Inbox(b) as to_b:
        await sender.send_command("call-a", Command.HANGUP, reason="balance_depleted")
        assert await to_a.next() == CallCommand("call-a", Command.HANGUP, "balance_depleted")
        await to_b.nothing_arrives()
        await sender.send_command("call-b", Command.HANGUP)
        assert await to_b.next() == CallCommand("call-b", Command.HANGUP, None)
        await to_a.nothing_arrives()


async def test_commands_follow_the_call_when_another_instance_claims_it(
    cluster: Cluster,
) -> None:
    answering, media = cluster.instance("answering"), cluster.instance("media")
    reserved = (await answering.reserve("acme", "call", limit=None, ttl=30)).lease
    assert reserved is not None
    async with Inbox(answering) as to_answering, Inbox(media) as to_media:
        await media.send_command("call", Command.HANGUP)
        assert (await to_answering.next()).call_id == "call"
        await media.claim("acme", "call", reserved.token, ttl=TTL)
        assert await answering.owner_of("call") == "media"
        await answering.send_command("call", Command.HANGUP)
        assert (await to_media.next()).call_id == "call"
        await to_answering.nothing_arrives()


async def test_commands_to_calls_without_a_lease_are_not_found(cluster: Cluster) -> None:
    gw = cluster.instance("gw")
    with pytest.raises(NotFoundError):
        await gw.send_command("never-existed", Command.HANGUP)
    lease = await _live_call(gw, "acme", "ended")
    assert await gw.release("acme", "ended", lease.token)
    with pytest.raises(NotFoundError):
        await gw.send_command("ended", Command.HANGUP)
    await _live_call(gw, "acme", "expired")
    await cluster.pass_time(TTL + 0.1)
    with pytest.raises(NotFoundError):
        await gw.send_command("expired", Command.HANGUP)
    assert await gw.owner_of("expired") is None


async def test_bad_commands_are_refused(cluster: Cluster) -> None:
    gw = cluster.instance("gw")
    await _live_call(gw, "acme", "call")
    with pytest.raises(ValidationError, match="command"):
        await gw.send_command("call", "hangup")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="reason"):
        await gw.send_command("call", Command.HANGUP, reason="two words")


async def test_the_rate_limit_allows_limit_hits_per_window(cluster: Cluster) -> None:
    gw, other = cluster.instance("gw"), cluster.instance("other")
    window = 1.0
    decisions = [
        await (gw if i % 2 else other).hit("key", limit=3, window=window) for i in range(5)
    ]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert all(0 < d.reset_after <= window for d in decisions)
    assert (await gw.hit("another-key", limit=1, window=window)).allowed
    await cluster.pass_time(window + 0.05)
    assert (await gw.hit("key", limit=3, window=window)).remaining == 2  # refusals not counted


async def test_bad_rate_limit_arguments_are_refused(cluster: Cluster) -> None:
    gw = cluster.instance("gw")
    with pytest.raises(ValidationError, match="limit"):
        await gw.hit("key", limit=0, window=1)
    with pytest.raises(ValidationError, match="window"):
        await gw.hit("key", limit=1, window=0)


async def test_ping_answers(cluster: Cluster) -> None:
    await cluster.instance("gw").ping()
