"""Redis specifics: what is left in Redis, key names, unreadable stream entries, the factory."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from gateway.errors import ValidationError
from gateway.store.coordination import Command, open_coordination
from gateway.store.coordination.redis import RedisCoordination
from tests.coordination.test_registry import Inbox

pytestmark = pytest.mark.redis


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def _gateway(url: str, namespace: str, name: str = "gw") -> RedisCoordination:
    return RedisCoordination.from_url(
        url, name, namespace=namespace, barrier=0, tombstone_ttl=0.3, command_poll=0.05
    )


async def _keys(raw: Redis, namespace: str) -> set[str]:
    return {key async for key in raw.scan_iter(match=f"{{{namespace}}}:*")}


async def test_a_finished_call_and_a_refused_one_leave_nothing_behind(
    redis_url: str, raw: Redis
) -> None:
    ns = f"test-{uuid.uuid4().hex[:12]}"
    gw = _gateway(redis_url, ns)
    try:
        reserved = (await gw.reserve("acme", "call", limit=1, ttl=30)).lease
        assert reserved is not None
        assert not (await gw.reserve("acme", "refused", limit=1, ttl=30)).admitted
        assert await _keys(raw, ns) == {
            f"{{{ns}}}:lease:acme",
            f"{{{ns}}}:call:call",
            f"{{{ns}}}:fence",
            f"{{{ns}}}:epoch",
        }
        lease = (await gw.claim("acme", "call", reserved.token, ttl=30)).lease
        assert lease is not None
        assert await gw.release("acme", "call", lease.token)
        for _ in range(40):  # the tombstone expires after 0.3 s
            if await _keys(raw, ns) == {f"{{{ns}}}:fence", f"{{{ns}}}:epoch"}:
                break
            await asyncio.sleep(0.05)
        assert await _keys(raw, ns) == {f"{{{ns}}}:fence", f"{{{ns}}}:epoch"}
    finally:
        await gw.close()


async def test_every_coordination_key_carries_the_namespace_hash_tag(
    redis_url: str, raw: Redis
) -> None:
    ns = f"test-{uuid.uuid4().hex[:12]}"
    gw = _gateway(redis_url, ns)
    try:
        reserved = (await gw.reserve("acme", "call", limit=None, ttl=30)).lease
        assert reserved is not None
        async with Inbox(gw):
            await gw.send_command("call", Command.HANGUP)
            await asyncio.sleep(0.1)
        keys = await _keys(raw, ns)
        assert f"{{{ns}}}:cmd:gw" in keys
        slots = {key_slot(key.encode()) for key in keys}
        assert len(slots) == 1  # one Cluster slot: a script may touch them all
    finally:
        await gw.close()


async def test_an_unreadable_command_entry_is_skipped(redis_url: str, raw: Redis) -> None:
    ns = f"test-{uuid.uuid4().hex[:12]}"
    gw = _gateway(redis_url, ns)
    try:
        await gw.reserve("acme", "call", limit=None, ttl=30)
        async with Inbox(gw) as inbox:
            await raw.xadd(f"{{{ns}}}:cmd:gw", {"call_id": "call", "command": "explode"})
            await gw.send_command("call", Command.HANGUP)
            assert (await inbox.next()).command is Command.HANGUP
            await inbox.nothing_arrives()
    finally:
        await gw.close()


def test_a_namespace_with_braces_is_refused(redis_url: str) -> None:
    with pytest.raises(ValidationError, match="namespace"):
        RedisCoordination.from_url(redis_url, "gw", namespace="a{b}")


async def test_open_coordination_picks_redis_with_a_url(redis_url: str) -> None:
    coord = open_coordination(redis_url, "gw", namespace=f"test-{uuid.uuid4().hex[:12]}")
    try:
        assert isinstance(coord, RedisCoordination)
        await coord.ping()
    finally:
        await coord.close()
