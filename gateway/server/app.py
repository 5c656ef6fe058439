"""The aiohttp application: routes, and one ``cleanup_ctx`` per resource.

Resources come up in order and go down in reverse (aiohttp ``Application.cleanup_ctx``):
SQL state (migrated on the embedded default) and the checkpoint batcher, coordination,
the media-token registry, the HTTP client (agent WebSockets, carrier REST hang-ups), then
the :class:`Engine` and the per-instance loops: lease renewals, the command listener
(hang up call X), the reaper, the webhook dispatcher. At shutdown live calls are ended
with reason ``drain`` (finalized, released) before the resources below them close.

Routes: ``/inbound/{provider}`` (GET, POST), ``/media/{provider}/{token}`` (WebSocket),
the ops endpoints ``/healthz``, ``/readyz``, ``/metrics`` (:mod:`gateway.ops`), ``/v1``.
One :class:`~gateway.metrics.GatewayMetrics` per app, on the injected registries
(a fresh single-process registry unless given), reachable as ``app[METRICS]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from gateway.api import ApiSettings, CarrierApi, CarrierApiUrls
from gateway.api.app import bind_api_state, build_api_app
from gateway.bridge import LinkTransport, is_websocket_pipeline, make_link
from gateway.bridge.link import AgentLink
from gateway.call_events import EndReason, HangupRequested, LeaseLost
from gateway.calltoken import CallTokens, MemoryTokenUseRegistry, TokenUseRegistry
from gateway.carriers import MemoryNonceStore
from gateway.config import Settings
from gateway.errors import AgentError, CoordinationUnavailable
from gateway.log import register_secret
from gateway.metrics import GatewayMetrics, LeaseOp
from gateway.ops import (
    MetricsRegistries,
    OpsSettings,
    Readiness,
    add_ops_routes,
    gc_pause_ctx,
    loop_lag_ctx,
    metrics_registries,
    stall_watch_ctx,
)
from gateway.ops.secrets import register_settings_secrets
from gateway.server.answer import inbound
from gateway.server.checkpoints import CheckpointBatcher
from gateway.server.context import ENGINE, Engine, LinkFactory, media_token_keys
from gateway.server.media_ws import media
from gateway.store.coordination import Command, Coordination, RenewStatus, open_coordination
from gateway.store.models import Agent
from gateway.store.reaper import Reaper
from gateway.store.sql_state import SqlState
from gateway.webhooks.dispatcher import run_dispatcher

__all__ = ["METRICS", "create_app", "default_links"]

log = logging.getLogger("gateway.server")

_MAX_BODY_BYTES = 64 * 1024  # reliability.md 5.1: webhook bodies are small
_DRAIN_TIMEOUT_S = 10.0

METRICS = web.AppKey("metrics", GatewayMetrics)
"""The app's :class:`GatewayMetrics` (also ``engine.metrics``)."""


async def default_links(engine: Engine, agent: Agent) -> AgentLink:
    """The agent link for ``agent``: a built-in agent by name, or its WebSocket URL."""
    if not is_websocket_pipeline(agent.pipeline):
        return make_link(agent.pipeline)
    secret = await engine.state.directory.agent_pipeline_secret(agent.tenant_id, agent.id)
    if secret is None:
        raise AgentError(f"agent {agent.id} has no pipeline secret", reason="misconfigured")
    revealed = secret.reveal()
    register_secret(revealed)  # the log safety net never prints it (a set lookup once known)
    transport: LinkTransport = (
        "aiohttp" if engine.settings.agent_transport == "aiohttp" else "picows"
    )
    return make_link(
        agent.pipeline, session=engine.http, secret=revealed.encode(), transport=transport
    )


def create_app(
    settings: Settings,
    *,
    migrate: bool = False,
    links: LinkFactory = default_links,
    wall_clock: Callable[[], float] = time.time,
    registries: MetricsRegistries | None = None,
    ops: OpsSettings | None = None,
) -> web.Application:
    """Build the gateway's application.

    Args:
        settings: the process's settings.
        migrate: run the packaged migrations at start (the embedded default does).
        links: builds each call's agent link.
        wall_clock: Unix time in seconds (tokens, signatures, record times).
        registries: where metrics go and what ``/metrics`` serves (default: fresh ones
            for this process, multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set).
        ops: the operations settings (per-tenant metric labels); default: none listed.
    """
    register_settings_secrets(settings)
    app = web.Application(client_max_size=_MAX_BODY_BYTES)
    registries = registries or metrics_registries()
    tenants = (ops or OpsSettings()).metrics_tenants
    metrics = app[METRICS] = GatewayMetrics(registries.metrics, tenants=tenants)
    api = build_api_app()
    app.cleanup_ctx.append(loop_lag_ctx(metrics.observe_loop_lag))
    app.cleanup_ctx.append(gc_pause_ctx(metrics.observe_gc_pause))
    app.cleanup_ctx.append(stall_watch_ctx())
    app.cleanup_ctx.append(_engine_ctx(settings, migrate, links, wall_clock, api))
    # Drain on shutdown, before aiohttp cancels the handlers that run the calls.
    app.on_shutdown.append(_on_shutdown)
    app.router.add_route("GET", "/inbound/{provider}", inbound)
    app.router.add_route("POST", "/inbound/{provider}", inbound)
    app.router.add_get("/media/{provider}/{token}", media)
    _add_ops_routes(app, registries)
    app.add_subapp("/v1", api)
    return app


def _add_ops_routes(app: web.Application, registries: MetricsRegistries) -> None:
    """``/healthz``, ``/readyz`` (draining, coordination and database pings), ``/metrics``."""

    def draining() -> bool:
        engine = app.get(ENGINE)
        return engine is not None and engine.draining

    def started() -> Engine:
        engine = app.get(ENGINE)
        if engine is None:  # still starting (or stopped): not ready, the checks say "fail"
            raise RuntimeError("the engine is not running")
        return engine

    async def coordination_ping() -> None:
        await started().coordination.ping()

    async def database_ping() -> None:
        await started().state.ping()

    readiness = Readiness(draining, {"coordination": coordination_ping, "database": database_ping})

    def details() -> dict[str, int]:
        engine = app.get(ENGINE)
        return {"live_calls": 0 if engine is None else len(engine.live)}

    add_ops_routes(app, exposition=registries.exposition, readiness=readiness, details=details)


def _engine_ctx(
    settings: Settings,
    migrate: bool,
    links: LinkFactory,
    wall_clock: Callable[[], float],
    api: web.Application,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            state = await SqlState.open(settings, migrate=migrate)
            stack.push_async_callback(state.close)
            # Closed (a last flush) after the drain has finalized the calls, before the
            # database closes.
            batcher = CheckpointBatcher(state.ledger, metrics=app[METRICS])
            checkpoints = await stack.enter_async_context(batcher)
            options = {} if settings.redis_url is None else {"namespace": settings.redis_namespace}
            coordination = open_coordination(settings.redis_url, **options)
            stack.push_async_callback(coordination.close)
            token_uses = await _token_registry(settings, stack)
            http = aiohttp.ClientSession()
            stack.push_async_callback(http.close)
            engine = Engine(
                settings=settings,
                state=state,
                coordination=coordination,
                tokens=CallTokens(media_token_keys(settings)),
                token_uses=token_uses,
                nonces=MemoryNonceStore(),
                http=http,
                links=links,
                wall_clock=wall_clock,
                checkpoints=checkpoints,
                metrics=app[METRICS],
            )
            app[ENGINE] = engine
            _bind_api(api, engine)
            stop = asyncio.Event()
            loops = [
                asyncio.create_task(_renew_loop(engine, stop), name="lease-renew"),
                asyncio.create_task(_command_loop(engine), name="commands"),
                asyncio.create_task(_reaper_loop(engine, stop), name="reaper"),
                asyncio.create_task(
                    run_dispatcher(
                        settings, state.engine, state.keyring, stop, engine.metrics.webhooks
                    ),
                    name="webhooks",
                ),
            ]
            try:
                yield
            finally:
                await _drain(engine)
                stop.set()
                for task in loops:
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)

    return ctx


def _bind_api(api: web.Application, engine: Engine) -> None:
    """Serve ``/v1`` from this process's stores, coordination and HTTP client."""
    settings = engine.settings
    defaults = CarrierApiUrls()
    urls = CarrierApiUrls(
        twilio=settings.twilio_api_base_url or defaults.twilio,
        plivo=settings.plivo_api_base_url or defaults.plivo,
        vonage=settings.vonage_rest_base_url or defaults.vonage,
    )
    api_settings = ApiSettings(
        admin_token=settings.admin_token,
        requests_per_minute_per_key=settings.api_rate_per_key,
        requests_per_minute_per_tenant=settings.api_rate_per_tenant,
        webhook_dev_mode=settings.webhook_dev_mode,
        webhook_rotation_window_s=settings.webhook_rotation_window_s,
        public_base_url=settings.base_url,  # outbound calls' answer URLs
        reservation_ttl_s=settings.reservation_ttl_s,
    )
    state = engine.state
    bind_api_state(
        api,
        state.directory,
        state.ledger,
        engine.coordination,
        api_settings,
        CarrierApi(engine.http, urls),
    )


async def _token_registry(settings: Settings, stack: contextlib.AsyncExitStack) -> TokenUseRegistry:
    if settings.redis_url is None:
        return MemoryTokenUseRegistry()
    from redis.asyncio import Redis

    from gateway.calltoken_redis import RedisTokenUseRegistry

    redis: Redis = Redis.from_url(settings.redis_url)
    stack.push_async_callback(redis.aclose)
    return RedisTokenUseRegistry(redis)


async def _on_shutdown(app: web.Application) -> None:
    await _drain(app[ENGINE])


async def _drain(engine: Engine) -> None:
    """End every live call with reason ``drain`` and wait (bounded) for them to finish."""
    engine.draining = True
    engine.metrics.set_draining(True)
    for call_id in list(engine.live.calls):
        engine.live.post(call_id, HangupRequested(EndReason.DRAIN))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(engine.live.wait_empty(), timeout=_DRAIN_TIMEOUT_S)


async def _renew_loop(engine: Engine, stop: asyncio.Event) -> None:
    """Renew this instance's leases; a call whose lease is gone ends (reliability.md 1.3)."""
    interval = engine.settings.lease_renew_interval_s
    metrics = engine.metrics
    while not stop.is_set():
        try:
            statuses = await engine.coordination.renew_all(ttl=engine.settings.lease_ttl_s)
        except CoordinationUnavailable as exc:
            log.warning("lease renew failed (%s); live calls go on", exc)
            metrics.lease_operation(LeaseOp.RENEW, "error")
            metrics.coordination_error(LeaseOp.RENEW)
            statuses = {}
        for call_id, status in statuses.items():
            metrics.lease_operation(LeaseOp.RENEW, status.value)
            if status in (RenewStatus.FENCED, RenewStatus.RELEASED):
                engine.live.post(call_id, LeaseLost())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def _command_loop(engine: Engine) -> None:
    """Deliver coordination commands (hang up call X) to the calls running here."""
    coordination: Coordination = engine.coordination
    while True:
        try:
            async with contextlib.aclosing(coordination.commands()) as commands:
                async for command in commands:
                    if command.command is Command.HANGUP:
                        reason = _hangup_reason(command.reason)
                        if not engine.live.post(command.call_id, HangupRequested(reason)):
                            log.info("hang-up for call %s: not running here", command.call_id)
        except CoordinationUnavailable as exc:
            log.warning("command listener: %s; retrying", exc)
            engine.metrics.coordination_error("command")
            await asyncio.sleep(1.0)


def _hangup_reason(reason: str | None) -> EndReason:
    """A command's reason as an end reason: a known code, else ``admin_hangup``."""
    try:
        end = EndReason(reason) if reason else EndReason.ADMIN_HANGUP
    except ValueError:
        return EndReason.ADMIN_HANGUP
    allowed = (EndReason.ADMIN_HANGUP, EndReason.BALANCE_DEPLETED, EndReason.DRAIN)
    return end if end in allowed else EndReason.ADMIN_HANGUP


async def _reaper_loop(engine: Engine, stop: asyncio.Event) -> None:
    settings = engine.settings
    reaper = Reaper(engine.state.ledger, settings.reaper_stale_after_s * 1000)
    await reaper.run(settings.reaper_interval_s, stop)
