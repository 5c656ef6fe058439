"""What every request handler and call runner shares: the engine's resources.

One :class:`Engine` per process, built by the app's ``cleanup_ctx`` (:mod:`gateway.server.app`)
and stored under the typed :data:`ENGINE` key. It holds no per-call state except the
registry of live calls (:class:`LiveCalls`), which the command listener, the lease
renew loop and the drain use to reach a call running here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.call_events import Event
from gateway.calltoken import CallTokens, SigningKey, TokenUseRegistry
from gateway.carriers import NonceStore
from gateway.config import Settings, parse_master_keys
from gateway.metrics import GatewayMetrics
from gateway.server.checkpoints import CheckpointBatcher
from gateway.store.coordination import Coordination
from gateway.store.secrets import DEV_KEY_FILE, load_keyring
from gateway.store.sql_state import SqlState

if TYPE_CHECKING:
    from gateway.bridge.link import AgentLink
    from gateway.store.models import Agent

__all__ = ["ENGINE", "Engine", "LinkFactory", "LiveCalls", "Postable", "media_token_keys"]

log = logging.getLogger("gateway.server")


class Postable(Protocol):
    """A live call that accepts events from outside its own tasks."""

    def post(self, event: Event) -> None:
        """Deliver ``event`` to the call's session (from any task)."""


class LinkFactory(Protocol):
    """Builds the agent link for a call (built-in name or WebSocket URL)."""

    async def __call__(self, engine: Engine, agent: Agent) -> AgentLink:
        """A new, unopened link to ``agent``."""
        ...


@dataclass(slots=True)
class LiveCalls:
    """The calls running on this instance, by call id."""

    calls: dict[str, Postable] = field(default_factory=dict)
    _empty: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, call_id: str, call: Postable) -> None:
        """Register a call once its media has started."""
        self.calls[call_id] = call
        self._empty.clear()

    def remove(self, call_id: str) -> None:
        """Forget a call that ended (no-op if unknown)."""
        self.calls.pop(call_id, None)
        if not self.calls:
            self._empty.set()

    async def wait_empty(self) -> None:
        """Return once no call runs here."""
        if self.calls:
            await self._empty.wait()

    def post(self, call_id: str, event: Event) -> bool:
        """Deliver ``event`` to a live call; False if it is not running here."""
        call = self.calls.get(call_id)
        if call is None:
            return False
        call.post(event)
        return True

    def __len__(self) -> int:
        return len(self.calls)


@dataclass(slots=True)
class Engine:
    """The process-wide resources of the call engine."""

    settings: Settings
    state: SqlState
    coordination: Coordination
    tokens: CallTokens
    token_uses: TokenUseRegistry
    nonces: NonceStore
    http: aiohttp.ClientSession
    links: LinkFactory
    wall_clock: Callable[[], float]
    """Unix time in seconds (tokens, signatures, record times)."""
    checkpoints: CheckpointBatcher
    """The live calls' usage checkpoints, written in batches (``submit`` never waits)."""
    metrics: GatewayMetrics = field(default_factory=lambda: GatewayMetrics(CollectorRegistry()))
    """The process's metrics (one per process; the app injects the exposed registry)."""
    live: LiveCalls = field(default_factory=LiveCalls)
    draining: bool = False


ENGINE = web.AppKey("engine", Engine)
"""The app's :class:`Engine`."""


def media_token_keys(settings: Settings) -> list[SigningKey]:
    """Media-token signing keys derived from the master keys, newest first.

    Every instance of a fleet must verify tokens any other instance issued, so the keys
    come from the shared master keys (``RYMI_MASTER_KEYS``, or the dev key file of a
    one-node install) through HMAC-SHA256 with a fixed label (an HKDF-Expand step,
    RFC 5869 §2.3, with a uniformly random master key as PRK): the derived key is
    independent of the AES key it comes from, and rotates with it.
    """
    masters = settings.master_keys
    if not masters:
        load_keyring(settings)  # creates the dev key file on a first run
        path = Path(settings.data_dir) / DEV_KEY_FILE
        masters = parse_master_keys(path.read_text().strip())
    keys = []
    for master in masters:
        derived = hmac.new(master, b"rymi media call token v1\x01", hashlib.sha256).digest()
        key_id = hashlib.sha256(derived).hexdigest()[:8]
        keys.append(SigningKey(key_id, derived))
    return keys
