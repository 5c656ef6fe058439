"""Shared pieces of the agent bridge tests: the speech fixture, ``start``, real servers.

Every agent here is a real aiohttp WebSocket server on 127.0.0.1, port 0: the reference
agent server of ``loadtest/agent_server.py``, or a scripted agent (tests/bridge/agents.py)
that misbehaves on purpose. The WebSocket tests run twice, once per link
(:func:`ws_link`: picows, the default, and aiohttp, the fallback).
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Protocol

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.bridge import PicowsLink, WebSocketLink, WebSocketSettings
from gateway.bridge.link import AgentItem, AgentLink
from gateway.bridge.protocol import AudioSpec, Mark, Start
from loadtest.agent_server import AgentServerConfig, make_app
from loadtest.audio import FIXTURE as FIXTURE  # re-exported: the bridge tests' fixture

if TYPE_CHECKING:
    from tests.bridge.agents import ScriptedAgent

SECRET = b"agent-secret-for-the-bridge-tests-0123456789"
AGENT_ID = "agent-7"
FRAME_16K = 640  # 20 ms of PCM16 at 16 kHz
GUARD_S = 20.0  # failure guard for waits; never a speed assertion


def make_start(call_id: str = "call-1", agent_rate: int = 16000) -> Start:
    """A ``start`` for the test agent."""
    return Start(
        call_id=call_id,
        tenant_id="tenant-1",
        agent_id=AGENT_ID,
        from_="+14155550100",
        to="+14155550199",
        carrier="twilio",
        direction="inbound",
        max_duration_s=600,
        agent_audio=AudioSpec(sample_rate=agent_rate),  # type: ignore[arg-type]
    )


@cache
def speech() -> bytes:
    """The committed speech fixture: two phrases, PCM16 mono 16 kHz, whole 20 ms frames."""
    with wave.open(str(FIXTURE), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        pcm = w.readframes(w.getnframes())
    return pcm[: len(pcm) - len(pcm) % FRAME_16K]


def frames(pcm: bytes, size: int = FRAME_16K) -> list[bytes]:
    """``pcm`` cut into frames of ``size`` bytes (the last one may be short)."""
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def call_audio(silence_ms: int = 4000) -> list[bytes]:
    """The fixture then ``silence_ms`` of silence, as 20 ms frames (the echo's clock)."""
    return frames(speech() + bytes(32 * silence_ms))


def ws_url(server: TestServer, agent_id: str = AGENT_ID) -> str:
    """The WebSocket URL of ``agent_id`` on a test server."""
    return str(server.make_url(f"/agents/{agent_id}").with_scheme("ws"))


async def collect(link: AgentLink, until: Callable[[list[AgentItem]], bool]) -> list[AgentItem]:
    """Receive items until ``until(items)`` holds (guarded by :data:`GUARD_S`)."""
    items: list[AgentItem] = []
    async with asyncio.timeout(GUARD_S):
        while not until(items):
            item = await link.receive()
            assert item is not None, "the link ended early"
            items.append(item)
    return items


def has_mark(name: str) -> Callable[[list[AgentItem]], bool]:
    """A :func:`collect` condition: the mark ``name`` has arrived."""
    return lambda items: bool(items) and items[-1] == Mark(name=name)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The process-wide client session the gateway would share between calls."""
    async with aiohttp.ClientSession() as session:
        yield session


async def start_server(app: aiohttp.web.Application) -> TestServer:
    """Start ``app`` on 127.0.0.1 on a free port."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def echo_server() -> AsyncIterator[TestServer]:
    """The reference agent server, echo mode, in this process."""
    server = await start_server(make_app(AgentServerConfig(secret=SECRET)))
    yield server
    await server.close()


class LinkMaker(Protocol):
    """Builds an unopened WebSocket link of the kind under test."""

    def __call__(
        self, url: str, secret: bytes = SECRET, *, settings: WebSocketSettings | None = None
    ) -> AgentLink: ...


WS_LINKS = ["picows", "aiohttp"]
"""The WebSocket link kinds, as fixture parameters."""


def link_maker(kind: str, http: aiohttp.ClientSession) -> LinkMaker:
    """A :class:`LinkMaker` for ``kind`` (``picows`` or ``aiohttp``)."""

    def make(
        url: str, secret: bytes = SECRET, *, settings: WebSocketSettings | None = None
    ) -> AgentLink:
        if kind == "picows":
            return PicowsLink(url, secret, settings=settings)
        return WebSocketLink(http, url, secret, settings=settings)

    return make


@pytest.fixture(params=WS_LINKS)
def ws_link(request: pytest.FixtureRequest, http: aiohttp.ClientSession) -> LinkMaker:
    """Each WebSocket link in turn."""
    return link_maker(request.param, http)


Run = Callable[..., Awaitable[tuple[AgentLink, "ScriptedAgent"]]]
"""``run(script=None, *, read=True, settings=None, agent=None)``: a scripted agent, and
a link of the kind under test opened to it."""


@pytest.fixture
async def scripted(ws_link: LinkMaker) -> AsyncIterator[Run]:
    """Start a scripted agent and open a link of the kind under test to it."""
    from tests.bridge.agents import Script, ScriptedAgent  # it imports this module

    servers: list[TestServer] = []

    async def run(
        script: Script | None = None,
        *,
        read: bool = True,
        settings: WebSocketSettings | None = None,
        agent: ScriptedAgent | None = None,
    ) -> tuple[AgentLink, ScriptedAgent]:
        if agent is None:
            agent = ScriptedAgent(script, read=read) if script else ScriptedAgent(read=read)
        servers.append(await start_server(agent.app()))
        link = ws_link(ws_url(servers[-1]), settings=settings)
        await link.open(make_start())
        return link, agent

    yield run
    for server in servers:
        await server.close()
