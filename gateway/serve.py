"""``rymi-gateway serve``: run the gateway.

On the embedded defaults (SQLite under ``RYMI_DATA_DIR``, in-process coordination, port
8080) it migrates the database and seeds the demo tenant with the echo agent, then
prints the answer URLs to give a carrier, so a newcomer can make a call with no other
server. ``--redis-url`` / ``--database-url`` (or ``RYMI_REDIS_URL`` /
``RYMI_DATABASE_URL``) switch to the fleet backends; a PostgreSQL database is not
migrated or seeded here (run ``rymi-gateway db upgrade`` once per release, so instances
starting together do not race).

SIGTERM and SIGINT drain: live calls are ended with reason ``drain`` and finalized
before the process exits. uvloop is used when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys

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
    cmd.set_defaults(serve=True)


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code."""
    from gateway.config import Settings, normalize_database_url
    from gateway.errors import ConfigError, GatewayError

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step
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
        with contextlib.suppress(ImportError):
            import uvloop  # type: ignore[import-not-found, unused-ignore]

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return asyncio.run(_serve(settings, demo=not args.no_demo))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's error output
        return 2
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1


async def _serve(settings: object, *, demo: bool) -> int:
    from aiohttp import web

    from gateway.config import Settings
    from gateway.server import create_app

    assert isinstance(settings, Settings)
    embedded = settings.database_url.startswith("sqlite")
    if embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if embedded and demo:
        await _seed(settings)  # prints the answer URLs with the demo wiring
    else:
        for carrier in ("twilio", "plivo", "vonage"):
            log.info("answer URL for %s: %s/inbound/%s", carrier, settings.base_url, carrier)
    app = create_app(settings, migrate=embedded)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    log.info("rymi-gateway listening on %s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("draining: ending live calls")
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
