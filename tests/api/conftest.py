"""A real API server for the tests: the ``/v1`` sub-application on a loopback port.

The official ``rymi`` SDK is synchronous (``requests``), so the server runs on its own
event loop in a background thread; tests call it over real HTTP, with the SDK or an
aiohttp client, and reach the state behind it (to arrange data and to prove what was
or was not stored) with :meth:`ApiServer.run`, which runs a coroutine on the server's
loop. The state is real: a migrated SQLite file, the in-process coordination backend
(two instances on one hub, to play "the instance that owns the call"), and local
stand-ins for the carriers' REST APIs (:mod:`tests.api.carriers`).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from gateway.api import ApiSettings, CarrierApi, CarrierApiUrls, make_api_app
from gateway.store.coordination import MemoryCoordination, MemoryHub
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger
from gateway.store.models import KeyKind
from gateway.store.secrets import Keyring
from gateway.store.sql.engine import create_engine
from gateway.store.sql.migrate import upgrade
from tests.api.carriers import StandIns, make_carriers_app
from tests.store.conftest import row_counts

_T = TypeVar("_T")
ADMIN_TOKEN = "admin-" + "x" * 40
PUBLIC_BASE_URL = "https://gw.example.test"
"""The gateway's public base URL (outbound calls' answer URLs start with it)."""


@dataclass
class Account:
    """A tenant and one of its secret keys."""

    tenant_id: str
    key: str
    key_id: str


class ApiServer:
    """The API (and the carrier stand-ins) served from a background thread."""

    def __init__(self, database_url: str, settings: ApiSettings) -> None:
        self.database_url = database_url
        self.settings = settings
        self.carriers = StandIns()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._cleanup: list[Callable[[], Awaitable[object]]] = []
        self.base = ""

    def start(self) -> ApiServer:
        self._thread.start()
        self.run(self._start())
        return self

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """:meth:`run` for async tests (awaits instead of blocking their loop)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._cleanup.append(runner.cleanup)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def _start(self) -> None:
        self.engine = create_engine(self.database_url)
        self._cleanup.append(self.engine.dispose)
        self.directory = Directory(self.engine, Keyring((secrets.token_bytes(32),)))
        self.ledger = Ledger(self.engine)
        self.hub = MemoryHub()
        self.coordination: MemoryCoordination = self.hub.connect("api-instance")
        self.owner: MemoryCoordination = self.hub.connect("call-instance")
        carriers_base = await self._serve(make_carriers_app(self.carriers))
        self.session = aiohttp.ClientSession()
        self._cleanup.append(self.session.close)
        urls = CarrierApiUrls(twilio=carriers_base, plivo=carriers_base, vonage=carriers_base)
        api = make_api_app(
            self.directory,
            self.ledger,
            self.coordination,
            self.settings,
            CarrierApi(self.session, urls),
        )
        root = web.Application()
        root.add_subapp("/v1", api)
        self.base = await self._serve(root)

    async def _stop(self) -> None:
        for cleanup in reversed(self._cleanup):
            await cleanup()

    def stop(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    @property
    def v1(self) -> str:
        """The API's base URL (what the SDK takes as ``base_url``)."""
        return f"{self.base}/v1"

    # -- arranging state -------------------------------------------------------------

    def account(self, name: str = "acme") -> Account:
        """A fresh tenant with one secret key."""
        return self.run(self._account(name))

    async def _account(self, name: str) -> Account:
        tenant = await self.directory.create_tenant(f"{name}-{uuid.uuid4().hex[:6]}")
        created = await self.directory.create_api_key(tenant.id, KeyKind.SECRET, label="test")
        return Account(tenant.id, created.plaintext.reveal(), created.key.id)

    def counts(self) -> dict[str, int]:
        """Rows in every table."""
        return self.run(row_counts(self.engine))


@pytest.fixture(scope="session")
def api_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file shared by the API servers of this session."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('api')}/api.db"
    asyncio.run(upgrade(url))
    return url


@pytest.fixture(scope="session")
def server(api_database_url: str) -> Iterator[ApiServer]:
    """The shared API server (generous rate limits; tests use their own tenants)."""
    settings = ApiSettings(
        admin_token=ADMIN_TOKEN,
        requests_per_minute_per_key=10_000,
        requests_per_minute_per_tenant=10_000,
        public_base_url=PUBLIC_BASE_URL,
    )
    api = ApiServer(api_database_url, settings).start()
    yield api
    api.stop()


@pytest.fixture
def make_server(api_database_url: str) -> Iterator[Callable[[ApiSettings], ApiServer]]:
    """Start a server with particular settings (stopped after the test)."""
    started: list[ApiServer] = []

    def make(settings: ApiSettings) -> ApiServer:
        api = ApiServer(api_database_url, settings).start()
        started.append(api)
        return api

    yield make
    for api in started:
        api.stop()


@pytest.fixture
async def http() -> Any:
    """An aiohttp client session (closed after the test)."""
    async with aiohttp.ClientSession() as session:
        yield session
