"""``rymi-gateway serve``: run the gateway.

On the embedded defaults (SQLite under ``RYMI_DATA_DIR``, in-process coordination, port
8080) it migrates the database and seeds the demo tenant with the echo agent, then
prints the answer URLs to give a carrier, so a newcomer can make a call with no other
server. ``--redis-url`` / ``--database-url`` (or ``RYMI_REDIS_URL`` /
``RYMI_DATABASE_URL``) switch to the fleet backends; a PostgreSQL database is not
migrated or seeded here (run ``rymi-gateway db upgrade`` once per release, so instances
starting together do not race).

Logging is configured first (``RYMI_LOG_FORMAT`` text or json, ``RYMI_LOG_LEVEL``), and
the admin token and master keys are registered with the log safety net before anything
else can log them.

SIGTERM and SIGINT drain (:class:`~gateway.ops.drain.Drain`, docs/operations.md): the
instance stops being ready and refuses new answers with 503 at once, live calls run to
their end or to ``RYMI_DRAIN_DEADLINE_S``; a second signal or the deadline hangs the rest
up (reason ``drain``, each finalized and billed); then the process exits 0.

``--workers N`` (N > 1) runs a supervising parent (:class:`~gateway.ops.Supervisor`)
that starts N copies of ``serve --worker`` bound to the same port with SO_REUSEPORT and
sharing one prometheus-client multiprocess directory; it needs Redis and PostgreSQL
(:func:`~gateway.ops.check_workers`). uvloop is used when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["register", "run"]

log = logging.getLogger("gateway.serve")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` subcommand (standard library imports only)."""
    cmd = subparsers.add_parser(
        "serve",
        help="run the gateway (embedded defaults: port 8080, SQLite, echo demo)",
        description="Run the gateway. Settings come from RYMI_* variables; flags override.",
    )
    cmd.add_argument("--host", default=None, help="interface to listen on (RYMI_HOST)")
    cmd.add_argument("--port", type=int, default=None, help="TCP port (RYMI_PORT, 8080)")
    cmd.add_argument("--redis-url", default=None, help="Redis for a fleet (RYMI_REDIS_URL)")
    cmd.add_argument("--database-url", default=None, help="SQL database (RYMI_DATABASE_URL)")
    cmd.add_argument("--no-demo", action="store_true", help="do not seed the demo tenant on SQLite")
    cmd.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT); >1 needs Redis and PostgreSQL",
    )
    # Internal: how the supervisor starts each worker (binds with SO_REUSEPORT).
    cmd.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    cmd.set_defaults(serve=True)


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code."""
    from gateway.config import Settings, normalize_database_url
    from gateway.errors import ConfigError, GatewayError
    from gateway.log import configure_logging
    from gateway.ops.settings import OpsSettings

    try:
        ops = OpsSettings.from_env(os.environ)  # first: the other errors get logged its way
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's error output
        return 2
    configure_logging(ops.log_format, ops.log_level)
    try:
        settings = Settings.from_env(os.environ)
        overrides: dict[str, object] = {}
        if args.host:
            overrides["host"] = args.host
        if args.port is not None:
            if not 1 <= args.port <= 65535:
                raise ConfigError("--port", f"expected 1-65535, got {args.port}")
            overrides["port"] = args.port
        if args.redis_url:
            overrides["redis_url"] = args.redis_url
        if args.database_url:
            overrides["database_url"] = normalize_database_url(args.database_url, "--database-url")
        settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
        from gateway.ops.secrets import register_settings_secrets
        from gateway.ops.supervisor import check_workers

        register_settings_secrets(settings)

        check_workers(settings, args.workers)
        _choose_event_loop(settings.event_loop)
        if args.workers > 1 and not args.worker:
            return _supervise(args)
        return asyncio.run(_serve(settings, ops, demo=not args.no_demo, reuse_port=args.worker))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's error output
        return 2
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1


def _choose_event_loop(name: str) -> None:
    """uvloop when asked for and installed (the default), else the standard loop."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:  # e.g. Windows, where it does not exist
            log.warning("RYMI_EVENT_LOOP=uvloop but uvloop is not installed; using asyncio")
            return
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    log.info("event loop: %s", name)


def _supervise(args: argparse.Namespace) -> int:
    """The parent of ``--workers N``: start N ``serve --worker`` processes and watch them."""
    from gateway.ops import MULTIPROC_ENV, Supervisor

    command = [sys.executable, "-m", "gateway", "serve", "--worker", "--no-demo"]
    for flag, value in (
        ("--host", args.host),
        ("--port", args.port),
        ("--redis-url", args.redis_url),
        ("--database-url", args.database_url),
    ):
        if value is not None:
            command += [flag, str(value)]
    configured = os.environ.get(MULTIPROC_ENV, "").strip()
    directory = Path(configured or tempfile.mkdtemp(prefix="rymi-metrics-"))
    log.info("starting %d workers (metrics directory %s)", args.workers, directory)
    try:
        supervisor = Supervisor(args.workers, command, multiprocess_dir=directory)
        return asyncio.run(supervisor.run())
    finally:
        if not configured:
            shutil.rmtree(directory, ignore_errors=True)


async def _serve(settings: object, ops: object, *, demo: bool, reuse_port: bool = False) -> int:
    from aiohttp import web

    from gateway.call_events import EndReason, HangupRequested
    from gateway.config import Settings
    from gateway.ops import STALL_WATCH, Drain, OpsSettings, freeze_startup_heap
    from gateway.server import ENGINE, METRICS, create_app

    assert isinstance(settings, Settings)
    assert isinstance(ops, OpsSettings)
    embedded = settings.database_url.startswith("sqlite")
    if embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if embedded and demo:
        await _seed(settings)  # prints the answer URLs with the demo wiring
    else:
        for carrier in ("twilio", "plivo", "vonage"):
            log.info("answer URL for %s: %s/inbound/%s", carrier, settings.base_url, carrier)
    app = create_app(settings, migrate=embedded, ops=ops)
    metrics = app[METRICS]

    def live_calls() -> int:
        engine = app.get(ENGINE)
        return 0 if engine is None else len(engine.live)

    async def wait_empty() -> None:
        engine = app.get(ENGINE)
        if engine is not None:
            await engine.live.wait_empty()

    def hang_up_all() -> None:
        engine = app.get(ENGINE)
        if engine is None:
            return
        for call_id in list(engine.live.calls):
            engine.live.post(call_id, HangupRequested(EndReason.DRAIN))

    def on_draining(draining: bool) -> None:
        engine = app.get(ENGINE)
        if engine is not None:
            engine.draining = draining  # /readyz and the answer route answer 503 from now
        metrics.set_draining(draining)

    drain = Drain(
        live_calls=live_calls,
        wait_empty=wait_empty,
        hang_up_all=hang_up_all,
        on_draining=on_draining,
        deadline_s=ops.drain_deadline_s,
    )
    # Installed before start-up, so a SIGTERM during migrations drains instead of killing.
    drain.install(asyncio.get_running_loop())
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0)
    try:
        await runner.setup()
        if drain.draining:
            on_draining(True)  # the signal came while the engine was starting
        # Short full collections under load (ops/gcpause.py). Before the listener opens, so
        # no carrier request waits for this one collection, and excused from the stall watch.
        with app[STALL_WATCH].excused():
            frozen = freeze_startup_heap()
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        await site.start()
        log.info("rymi-gateway listening on %s:%d", settings.host, settings.port)
        log.debug("%d start-up objects frozen out of the collector's scans", frozen)
        left = await drain.run()
        log.info("drained (%d call(s) left); shutting down", left)
    finally:
        await runner.cleanup()
    return 0


async def _seed(settings: object) -> None:
    """``demo-seed`` (migrates, creates the demo tenant once, prints the answer URLs)."""
    from rich.console import Console

    from gateway import admin_commands
    from gateway.admin import Context
    from gateway.config import Settings

    assert isinstance(settings, Settings)
    context = Context(settings, Console(highlight=False, soft_wrap=True))
    try:
        await admin_commands.demo_seed(context, argparse.Namespace(number=None))
    finally:
        await context.engine.dispose()
