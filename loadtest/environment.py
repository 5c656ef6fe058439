"""What a run plays against: a gateway it spawns (default) or one already running.

**Spawned** (``--spawn``): a temp directory with a fresh SQLite database, migrated and
seeded with one tenant per carrier (:mod:`loadtest.tenants`); master keys generated for
the run; an optional external agent server (``python -m loadtest.agent_server``, probe,
echo or pattern mode, timing on) whose URL and secret the tenants' agents get; a
stand-in carrier REST API in this process (the gateway's hang-up requests go there,
never to a real carrier); then ``rymi-gateway serve --no-demo`` on a free loopback port,
ready when ``/healthz`` answers. Everything is stopped on exit (SIGTERM so the gateway
drains and bills, then SIGKILL), and the directory removed unless ``keep``.

The gateway runs under this interpreter, or under ``python`` (a ``compare`` variant:
another checkout's venv), then started in the temp directory with none of this
repository's paths on ``PYTHONPATH``, so that it imports that checkout's code. The
database is still migrated and seeded by this checkout: a gateway whose schema head
differs refuses to start, and says so (docs/loadtest.md, "Comparing gateways").

**Target** (``--target URL``): a running gateway; the tenants come from a setup file
(``rymi-loadtest seed``). CPU/RSS need its ``--pid``; billing checks need its
``--database-url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from loadtest.procs import Spawned, free_port
from loadtest.safety import check_target
from loadtest.tenants import Setup, seed

__all__ = [
    "SPAWN_OWNED",
    "EnvOptions",
    "Environment",
    "environment",
    "settings_env",
    "wait_port",
    "without_our_paths",
]

_READY_TIMEOUT_S = 60.0

SPAWN_OWNED = frozenset(
    {
        "RYMI_DATA_DIR",
        "RYMI_DATABASE_URL",
        "RYMI_MASTER_KEYS",
        "RYMI_HOST",
        "RYMI_PORT",
        "RYMI_REDIS_URL",
        "RYMI_TWILIO_API_BASE_URL",
        "RYMI_PLIVO_API_BASE_URL",
        "RYMI_VONAGE_API_BASE_URL",
    }
)
"""The settings a spawned gateway is given by the run itself (its database, keys, port,
the stand-in carrier API): a ``compare`` variant cannot change them."""


@dataclass(frozen=True, slots=True)
class EnvOptions:
    """How to get a gateway to load."""

    carriers: tuple[str, ...]
    target: str | None = None
    """Base URL of a running gateway; None: spawn one."""
    setup_file: Path | None = None
    allowed: tuple[str, ...] = ()
    pid: int | None = None
    database_url: str | None = None
    agent_stats_url: str | None = None
    """A --target's agent server ``/stats`` (``--timing``), for per-leg latencies."""
    agent: str = "builtin-echo"
    """``builtin-echo`` or ``external``."""
    agent_mode: str = "probe"
    """The external agent server's mode: ``probe``, ``echo`` or ``pattern``."""
    gateway_env: tuple[tuple[str, str], ...] = ()
    """Extra ``RYMI_*`` settings for a spawned gateway."""
    workdir: Path | None = None
    keep: bool = False
    gateways: int = 1
    """Spawned gateway processes sharing the database (more than 1 needs Redis)."""
    redis_url: str | None = None
    """Redis for spawned gateways; None with ``gateways`` > 1: a private redis-server."""
    private_redis: bool = False
    """Start a private redis-server even for one gateway (fault runs)."""
    gateway_cpus: frozenset[int] | None = None
    """CPUs of the spawned gateway(s) (``--gateway-cpus``); None: not pinned."""
    agent_cpus: frozenset[int] | None = None
    """CPUs of the spawned agent server (``--agent-cpus``); None: not pinned."""
    python: str | None = None
    """The spawned gateways' interpreter (a ``compare`` variant's ``python=``: another
    checkout's venv, whose code it runs); None: this one, ``sys.executable``."""
    extra_env: tuple[tuple[str, str], ...] = ()
    """More environment variables for the spawned gateways, any name (a ``compare``
    variant's); applied last."""


@dataclass
class Environment:
    """A gateway ready for load, and how to reach and watch it."""

    base_url: str
    public_url: str
    setup: Setup
    allowed: tuple[str, ...] = ()
    gateway_pid: int | None = None
    agent_pid: int | None = None
    agent_stats_url: str | None = None
    database_url: str | None = None
    workdir: Path | None = None
    gateway: Spawned | None = None
    gateways: list[Spawned] = field(default_factory=list)
    """Every spawned gateway (``--gateways N``, fault runs), the first is ``gateway``."""
    bases: list[str] = field(default_factory=list)
    """Their base URLs, in the same order."""
    redis_url: str | None = None
    redis: Spawned | None = None
    """The private redis-server, when this run started one."""
    master_key: str | None = field(default=None, repr=False)
    """The spawned gateways' master key (base64), for tools that open their database."""
    hangups: list[tuple[str, str]] = field(default_factory=list)
    """Hang-up requests the spawned gateway sent to the stand-in carrier API."""
    pacer_lead: int = 3
    """The gateway's ``RYMI_PACER_LEAD_FRAMES`` (its default unless set for the spawn)."""


@contextlib.asynccontextmanager
async def environment(options: EnvOptions) -> AsyncIterator[Environment]:
    """Yield a ready :class:`Environment`; stop everything started for it on exit."""
    if options.target is not None:
        yield await _target(options)
        return
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="rymi-loadtest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        async with _spawned(options, workdir) as env:
            yield env
    finally:
        if not options.keep and options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


async def _target(options: EnvOptions) -> Environment:
    assert options.target is not None
    check_target(options.target, options.allowed)
    if options.setup_file is None:
        raise ValueError("--target needs --setup FILE (written by `rymi-loadtest seed`)")
    setup = Setup.from_json(options.setup_file.read_text(encoding="utf-8"))
    missing = set(options.carriers) - set(setup.carriers)
    if missing:
        raise ValueError(f"{options.setup_file}: no tenant for {sorted(missing)}")
    if options.agent_stats_url is not None:
        check_target(options.agent_stats_url, options.allowed)
    base = options.target.rstrip("/")
    return Environment(
        base,
        base,
        setup,
        options.allowed,
        options.pid,
        agent_stats_url=options.agent_stats_url,
        database_url=options.database_url,
    )


@contextlib.asynccontextmanager
async def _spawned(options: EnvOptions, workdir: Path) -> AsyncIterator[Environment]:
    from gateway.config import Settings, parse_master_keys
    from gateway.store.secrets import generate_master_key
    from gateway.store.sql.migrate import upgrade

    key = generate_master_key()
    port = free_port()
    database_url = f"sqlite+aiosqlite:///{workdir}/gateway.db"
    settings = Settings(
        data_dir=workdir, database_url=database_url, master_keys=parse_master_keys(key)
    )
    await upgrade(database_url)
    async with contextlib.AsyncExitStack() as stack:
        pipeline, secret, agent = "echo", None, None
        if options.agent == "external":
            secret = secrets.token_urlsafe(32)
            agent = stack.enter_context(
                _agent_server(options.agent_mode, secret, workdir, options.agent_cpus)
            )
            pipeline = await _agent_url(agent)
        setup = await seed(
            settings, list(options.carriers), pipeline=pipeline, pipeline_secret=secret
        )
        (workdir / "setup.json").touch(mode=0o600)
        (workdir / "setup.json").write_text(setup.to_json(), encoding="utf-8")
        hangups: list[tuple[str, str]] = []
        api_url = await stack.enter_async_context(_carrier_api(hangups))
        redis_url, redis = options.redis_url, None
        if (options.gateways > 1 or options.private_redis) and redis_url is None:
            redis_url, redis = await _redis(stack, workdir)
        env = _gateway_env(options, workdir, database_url, key, port, api_url)
        if redis_url is not None:
            env["RYMI_REDIS_URL"] = redis_url
        env |= dict(options.extra_env)
        gateways: list[Spawned] = []
        bases: list[str] = []
        for n in range(options.gateways):
            port_n = port if n == 0 else free_port()
            argv = [options.python or sys.executable, "-m", "gateway", "serve", "--no-demo"]
            argv += ["--port", str(port_n)]
            log = workdir / ("gateway.log" if n == 0 else f"gateway{n + 1}.log")
            gateways.append(
                stack.enter_context(
                    Spawned(
                        argv,
                        env | {"RYMI_PORT": str(port_n)},
                        log,
                        grace_s=20,
                        cpus=options.gateway_cpus,
                        # `-m` puts the working directory first on sys.path: another
                        # checkout's interpreter, started in ours, would import our code.
                        cwd=workdir if options.python else None,
                    )
                )
            )
            bases.append(f"http://127.0.0.1:{port_n}")
        for base_n, spawned in zip(bases, gateways, strict=True):
            await _wait_ready(base_n, spawned)
        gateway, base = gateways[0], bases[0]
        stats_url = None
        if agent is not None:
            stats_url = pipeline.removesuffix("/agents").replace("ws://", "http://") + "/stats"
        yield Environment(
            base_url=base,
            public_url=base,
            setup=setup,
            allowed=options.allowed,
            gateway_pid=gateway.pid,
            agent_pid=agent.pid if agent else None,
            agent_stats_url=stats_url,
            database_url=database_url,
            workdir=workdir,
            gateway=gateway,
            gateways=gateways,
            bases=bases,
            redis_url=redis_url,
            redis=redis,
            master_key=key,
            hangups=hangups,
            pacer_lead=int(settings_env(options).get("RYMI_PACER_LEAD_FRAMES", "3")),
        )


async def _redis(stack: contextlib.AsyncExitStack, workdir: Path) -> tuple[str, Spawned]:
    """A private redis-server on a free loopback port (no persistence), stopped on exit."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("two gateways need Redis: install redis-server or pass --redis-url")
    port = free_port()
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = stack.enter_context(Spawned(argv, dict(os.environ), workdir / "redis.log", grace_s=5))
    await wait_port(port)
    return f"redis://127.0.0.1:{port}/0", redis


async def wait_port(port: int, within_s: float = _READY_TIMEOUT_S) -> None:
    """Wait until something accepts TCP connections on loopback ``port``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listens on port {port} in time")


def _gateway_env(
    options: EnvOptions, workdir: Path, database_url: str, key: str, port: int, api_url: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYMI_")}
    env |= {
        "RYMI_DATA_DIR": str(workdir),
        "RYMI_DATABASE_URL": database_url,
        "RYMI_MASTER_KEYS": key,
        "RYMI_HOST": "127.0.0.1",
        "RYMI_PORT": str(port),
        "RYMI_TWILIO_API_BASE_URL": api_url,
        "RYMI_PLIVO_API_BASE_URL": api_url,
        "RYMI_VONAGE_API_BASE_URL": api_url,
    }
    for name, value in options.gateway_env:
        if not name.startswith("RYMI_"):
            raise ValueError(f"--gateway-env: expected RYMI_* settings, got {name!r}")
        env[name] = value
    if options.python is not None:
        env = without_our_paths(env)
    return env


def settings_env(options: EnvOptions) -> dict[str, str]:
    """The variables a spawned gateway is given on top of the run's own (later wins)."""
    return dict(options.gateway_env) | dict(options.extra_env)


def without_our_paths(env: dict[str, str]) -> dict[str, str]:
    """``env`` without this repository's entries on ``PYTHONPATH``: another checkout's
    interpreter must import that checkout's ``gateway``, not ours."""
    ours = Path(__file__).resolve().parents[1]
    entries = env.get("PYTHONPATH", "").split(os.pathsep)
    kept = [e for e in entries if e and not Path(e).resolve().is_relative_to(ours)]
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    return env | ({"PYTHONPATH": os.pathsep.join(kept)} if kept else {})


def _agent_server(
    mode: str, secret: str, workdir: Path, cpus: frozenset[int] | None = None
) -> Spawned:
    argv = [sys.executable, "-m", "loadtest.agent_server", "--port", "0", "--mode", mode]
    argv += ["--timing", f"--secret={secret}"]  # a token_urlsafe secret may start with "-"
    if mode == "pattern":
        from loadtest.audio import FIXTURE

        argv += ["--fixture", str(FIXTURE)]
    return Spawned(argv, dict(os.environ), workdir / "agent.log", grace_s=10, cpus=cpus)


async def _agent_url(agent: Spawned) -> str:
    """The ``ws://HOST:PORT/agents`` the agent server prints first."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in agent.output().splitlines():
            if "listening on ws://" in line:
                return line.split("listening on ", 1)[1].strip().rstrip("/")
        if not agent.alive():
            raise RuntimeError(f"agent server exited: {agent.output()[-500:]}")
        await asyncio.sleep(0.05)
    raise RuntimeError("agent server did not start in time")


async def _wait_ready(base: str, gateway: Spawned) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if not gateway.alive():
                raise RuntimeError(f"gateway exited: {gateway.output()[-800:]}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("gateway did not become ready in time")


@contextlib.asynccontextmanager
async def _carrier_api(hangups: list[tuple[str, str]]) -> AsyncIterator[str]:
    """A stand-in carrier REST API on loopback: records hang-ups, answers 2xx."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        hangups.append((request.method, request.path))
        return web.json_response({}, status=204 if request.method == "DELETE" else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
