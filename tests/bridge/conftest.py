"""Shared pieces of the agent bridge tests: the speech fixture, ``start``, real servers.

Every agent here is a real aiohttp WebSocket server on 127.0.0.1, port 0: the reference
agent server of ``loadtest/agent_server.py``, or a scripted agent (tests/bridge/agents.py)
that misbehaves on purpose.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator, Callable
from functools import cache
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.bridge.link import AgentItem, AgentLink
from gateway.bridge.protocol import AudioSpec, Mark, Start
from loadtest.agent_server import AgentServerConfig, make_app

SECRET = b"agent-secret-for-the-bridge-tests-0123456789"
AGENT_ID = "agent-7"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "two_phrases_16k.wav"
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
