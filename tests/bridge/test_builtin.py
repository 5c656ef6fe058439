"""The built-in registry, the in-process link's failure path, and the outgoing queue."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.bridge import (
    BUILTINS,
    BuiltinLink,
    PicowsLink,
    WebSocketLink,
    builtin,
    is_websocket_pipeline,
    make_link,
    open_link,
)
from gateway.bridge.builtin import SinkCore
from gateway.bridge.echo import EchoCore
from gateway.bridge.link import AgentItem, OutgoingQueue
from gateway.bridge.protocol import GatewayMessage, Start, Stop
from gateway.errors import AgentError, ConfigError, UnknownBuiltinError
from gateway.store.models import BUILTIN_PIPELINES
from tests.bridge.conftest import SECRET, make_start


class BrokenCore:
    """A built-in agent with a bug: it fails on the second frame."""

    def __init__(self, start: Start) -> None:
        self.frames = 0

    def receive_audio(self, pcm: bytes) -> list[AgentItem]:
        self.frames += 1
        if self.frames == 2:
            raise ZeroDivisionError("agent bug")
        return [pcm]

    def receive_message(self, message: GatewayMessage) -> list[AgentItem]:
        return []


def test_every_pipeline_the_directory_accepts_is_registered() -> None:
    assert set(BUILTIN_PIPELINES) <= set(BUILTINS)
    assert builtin("echo") is EchoCore
    assert builtin("silence") is SinkCore


def test_an_unknown_builtin_is_a_typed_error() -> None:
    with pytest.raises(UnknownBuiltinError) as info:
        builtin("parrot")
    assert isinstance(info.value, AgentError)
    assert isinstance(info.value, LookupError)
    assert info.value.reason == "unknown_builtin"
    assert "echo, silence" in str(info.value)
    with pytest.raises(UnknownBuiltinError):
        make_link("http://agent.example/ws")


async def test_make_link_picks_the_link_by_pipeline(http: aiohttp.ClientSession) -> None:
    assert is_websocket_pipeline("wss://a.example/x")
    assert not is_websocket_pipeline("echo")
    assert isinstance(make_link("echo"), BuiltinLink)
    url = "ws://127.0.0.1:9/agents/a"
    assert isinstance(make_link(url, secret=SECRET), PicowsLink)  # the default
    aiohttp_link = make_link(url, session=http, secret=SECRET, transport="aiohttp")
    assert isinstance(aiohttp_link, WebSocketLink)
    with pytest.raises(ConfigError):
        make_link(url, session=http)  # no secret
    with pytest.raises(ConfigError):
        make_link(url, secret=SECRET, transport="aiohttp")  # aiohttp needs the session


async def test_open_link_opens_a_builtin() -> None:
    link = await open_link("silence", make_start())
    link.send_audio(bytes(640))
    await link.close(Stop(reason="caller_hangup"))
    assert await link.receive() is None
    assert link.stats().sent_frames == 1


async def test_a_failing_builtin_fails_the_link_once() -> None:
    link = BuiltinLink(BrokenCore, "broken")
    await link.open(make_start())
    link.send_audio(b"\x01\x00")
    link.send_audio(b"\x02\x00")  # raises inside the core
    link.send_audio(b"\x03\x00")  # ignored: the agent has failed
    assert await link.receive() == b"\x01\x00"  # what it said before failing
    with pytest.raises(AgentError) as info:
        await link.receive()
    assert info.value.reason == "agent_error"
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert await link.receive() is None
    await link.close(Stop(reason="agent_error"))
    assert link.stats().sent_frames == 2  # the third never reached the failed agent


class TestOutgoingQueue:
    def test_control_goes_first_and_audio_in_order(self) -> None:
        queue = OutgoingQueue(3)
        queue.put_audio(b"a1")
        queue.put_control("c1")
        queue.put_audio(b"a2")
        queue.put_control("c2")
        assert [queue.pop() for _ in range(5)] == ["c1", "c2", b"a1", b"a2", None]

    def test_full_queue_drops_the_oldest_audio_only(self) -> None:
        queue = OutgoingQueue(2)
        for frame in (b"1", b"2", b"3", b"4"):
            queue.put_audio(frame)
        for i in range(10):
            queue.put_control(str(i))  # control is never dropped
        assert queue.dropped == 2
        assert queue.audio_frames == 2
        assert len(queue) == 12
        assert [queue.pop() for _ in range(12)][-2:] == [b"3", b"4"]

    def test_clear_and_bounds(self) -> None:
        queue = OutgoingQueue(1)
        queue.put_audio(b"x")
        queue.put_control("y")
        queue.clear()
        assert queue.pop() is None
        with pytest.raises(ValueError, match="max_audio"):
            OutgoingQueue(0)
