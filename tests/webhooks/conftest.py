"""Helpers for the webhook suites: a real HTTP receiver, the SDK verifier, store fixtures.

:class:`Receiver` is an aiohttp server on a loopback port 0. Each path (``/a``, ``/b``)
follows its own script of answers, one per request: an HTTP status (``500``), ``hang``
(answer nothing until the receiver closes), ``slow`` (200 after 0.3 s), or ``200`` once
the script runs out. Every
request is kept with its arrival time (monotonic), headers and raw body, and
:func:`sdk_verify` checks it with the official SDK's ``verify_signature``.

The SQL fixtures (``database_url``, ``engine`` on SQLite and PostgreSQL, ``keyring``,
``directory``, ``ledger``) are the store suites' own (tests/store/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from rymi.resources.webhooks import WebhooksResource
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.metering import Role
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.models import CallEnd, CallStart, CallStatus, Direction, TranscriptLine
from gateway.store.secrets import Keyring
from gateway.store.sql.engine import create_engine
from gateway.store.sql.migrate import upgrade
from gateway.webhooks.dispatcher import DispatchSettings
from gateway.webhooks.endpoints import WebhookStore
from tests.store.conftest import (
    KEY_A,
    database_url,
    directory,
    engine,
    keyring,
    ledger,
    new_call_id,
    postgres_url,
    random_number,
    sqlite_url,
)

__all__ = [
    "Receiver",
    "Request",
    "database_url",
    "directory",
    "engine",
    "keyring",
    "ledger",
    "postgres_url",
    "sdk_verify",
    "sqlite_url",
]

SECRET = "whsec_" + "s" * 26
"""The endpoint secret most tests register (32 characters)."""


@dataclass(frozen=True)
class Request:
    """One request the receiver got."""

    at: float
    """Arrival, ``time.monotonic()``."""
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        """The JSON body."""
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Receiver:
    """A local webhook receiver (see the module docstring)."""

    scripts: dict[str, list[str]] = field(default_factory=dict)
    requests: dict[str, list[Request]] = field(default_factory=dict)
    base: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        """The URL of ``path`` (e.g. ``a``)."""
        return f"{self.base}/{path}"

    def got(self, path: str) -> list[Request]:
        """Requests received on ``path`` so far."""
        return self.requests.get(path, [])

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        got = self.requests.setdefault(path, [])
        got.append(Request(time.monotonic(), dict(request.headers), await request.read()))
        self.arrived.set()
        script = self.scripts.get(path, [])
        action = script[len(got) - 1] if len(got) <= len(script) else "200"
        if action == "hang":
            await self._closing.wait()
            return web.Response(status=200)
        if action == "slow":  # a 200, after a while (the kill test kills mid-request)
            await asyncio.sleep(0.3)
            return web.Response(status=200)
        return web.Response(status=int(action))

    async def wait_for(self, path: str, count: int) -> list[Request]:
        """Wait until ``path`` has ``count`` requests (callers bound it with a timeout)."""
        while len(self.got(path)) < count:
            self.arrived.clear()
            await self.arrived.wait()
        return self.got(path)


@contextlib.asynccontextmanager
async def receiver(**scripts: Sequence[str]) -> AsyncIterator[Receiver]:
    """Serve a :class:`Receiver` on ``127.0.0.1:0`` with per-path scripts."""
    rx = Receiver(scripts={k: list(v) for k, v in scripts.items()})
    app = web.Application()
    app.router.add_post("/{path}", rx.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rx.base = f"http://127.0.0.1:{port}"
    try:
        yield rx
    finally:
        rx._closing.set()
        await runner.cleanup()


def sdk_verify(request: Request, secret: str, header: str = "X-Rymi-Signature") -> bool:
    """The official SDK's verdict on ``request`` under ``secret`` (raises ValueError if bad)."""
    return bool(
        WebhooksResource.verify_signature(
            payload=request.body.decode(),
            signature_header=request.headers[header],
            timestamp_header=request.headers["X-Rymi-Timestamp"],
            webhook_secret=secret,
        )
    )


async def tenant_with_endpoint(
    directory: Directory,
    keyring: Keyring,
    url: str,
    events: Sequence[str] = ("call.completed",),
    secret: str = SECRET,
) -> tuple[str, str]:
    """A fresh tenant with one endpoint: (tenant id, endpoint id)."""
    tenant = await directory.create_tenant("wh-" + random_number()[-6:])
    store = WebhookStore(directory.engine, keyring)
    endpoint = await store.create(tenant.id, url, list(events), secret)
    return tenant.id, endpoint.id


async def opened_call(ledger: Ledger, tenant_id: str, lines: Sequence[str] = ()) -> str:
    """Open a live call for ``tenant_id`` with transcript ``lines``; returns its id."""
    call_id = new_call_id()
    now = ledger.clock()
    start = CallStart(
        call_id=call_id,
        tenant_id=tenant_id,
        agent_id="agent-1",
        number=random_number(),
        carrier="twilio",
        role=Role.OPERATOR,
        max_call_duration_s=600,
        answered_at_ms=now,
        direction=Direction.INBOUND,
    )
    await ledger.open_call(start)
    if lines:
        await ledger.append_transcript(
            call_id, [TranscriptLine("caller", text, now + i) for i, text in enumerate(lines)]
        )
    return call_id


async def finished_call(
    ledger: Ledger, tenant_id: str, audio_ms: int = 45_000, lines: Sequence[str] = ()
) -> str:
    """Open, transcribe and finalize a call for ``tenant_id``; returns its id."""
    call_id = await opened_call(ledger, tenant_id, lines)
    answered = (await ledger.get_call(call_id)).answered_at_ms
    end = CallEnd(call_id, CallStatus.COMPLETED, "caller_hangup", answered + audio_ms, audio_ms)
    await ledger.finalize(end)
    return call_id


@dataclass
class Fresh:
    """A private migrated SQLite database (a dispatcher claims every due row it sees)."""

    url: str
    engine: AsyncEngine
    keyring: Keyring
    directory: Directory
    ledger: Ledger
    store: WebhookStore


async def make_fresh(folder: Path) -> Fresh:
    """A migrated SQLite file in ``folder`` (the caller disposes of its engine)."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    url = f"sqlite+aiosqlite:///{folder}/webhooks.db"
    await upgrade(url)
    eng = create_engine(url)
    ring = Keyring((KEY_A,))
    return Fresh(url, eng, ring, Directory(eng, ring), Ledger(eng), WebhookStore(eng, ring))


@pytest.fixture
async def fresh(tmp_path: Path) -> AsyncIterator[Fresh]:
    """A fresh database for one test (SQLite file under ``tmp_path``)."""
    env = await make_fresh(tmp_path)
    yield env
    await env.engine.dispose()


def fast(**overrides: Any) -> DispatchSettings:
    """Dispatcher settings scaled down for tests (gaps 0.2, 0.4, 0.8, 1.6 s)."""
    values: dict[str, Any] = {
        "dev_mode": True,
        "attempt_timeout_s": 0.5,
        "retry_base_s": 0.2,
        "lease_s": 5.0,
        "poll_interval_s": 0.02,
    } | overrides
    return DispatchSettings(**values)
