"""A real agent process speaking ``rymi-agent/1`` as the *agent*: echo or talk/listen.

Run::

    python -m loadtest.agent_server --host 127.0.0.1 --port 9100 --secret "$SECRET" \\
        --mode echo
    python -m loadtest.agent_server --port 9100 --secret "$SECRET" --mode pattern \\
        --talk-ms 2000 --listen-ms 3000 --fixture loadtest/data/two_phrases_16k.wav

An agent's pipeline URL is then ``ws://HOST:PORT/agents/<agent_id>``: the gateway's bearer
token must be signed with ``--secret`` and name that agent id as its audience (else HTTP
401, RFC 6750 §3.1). ``GET /stats`` returns the per-call records as JSON; ``POST
/stats/take`` returns them and forgets them (a soak reads the records of the calls ended
since it last asked, so neither side holds an hour of timings); ``--stats-file`` also
writes the records kept on shutdown. SIGTERM or SIGINT closes open calls with 1001 (going away,
RFC 6455 §7.4.1) and exits 0. The first line on stdout gives the bound address (useful
with ``--port 0``).

Modes (the agent behaviour is a sans-I/O core, the same one the gateway runs in-process):

* ``echo``: :class:`gateway.bridge.echo.EchoCore`, each caller utterance played back.
* ``pattern``: :class:`loadtest.agent_pattern.PatternCore`, talk ``--talk-ms`` / listen
  ``--listen-ms`` in turn, talking a tone (``--tone-hz``) or a looped WAV fixture
  (``--fixture``), 20 ms per caller frame, with a ``mark`` after each spurt;
  ``--hangup-after-ms`` hangs up.
* ``probe``: :class:`loadtest.agent_pattern.ProbeCore`, each caller frame sent straight
  back (the load tester's round-trip probe).

``--timing`` records, per call, the monotonic time (``time.monotonic()``, the same clock
in every process of the host) and size of every audio message in and out, and the time
``start`` arrived, in the ``/stats`` records: the load tester matches them with its own
send and receive times to time each leg of the gateway (docs/loadtest.md).

It runs on uvloop when importable (:mod:`loadtest.loop`): it shares the cores with the
gateway it helps measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import WSMsgType, web

from gateway.bridge.builtin import AgentCore
from gateway.bridge.echo import EchoCore
from gateway.bridge.link import AgentItem
from gateway.bridge.protocol import (
    MAX_AUDIO_BYTES,
    PROTOCOL,
    Error,
    Start,
    Stop,
    UnknownMessage,
    decode_gateway_message,
    encode_message,
    verify_agent_token,
)
from gateway.errors import AgentError, CloseCode
from loadtest import loop as tester_loop
from loadtest.agent_pattern import PatternCore, ProbeCore, tone
from loadtest.audio import load_wav
from rymi_codecs import Resampler

__all__ = [
    "AgentServerConfig",
    "CallLog",
    "CallRecord",
    "CallTiming",
    "call_records",
    "main",
    "make_app",
    "serve",
    "wait_for_calls",
]

_MAX_RECORDS: Final = 100_000  # per-call records kept for /stats (oldest forgotten first)
_SOCKETS: Final = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])


@dataclass(frozen=True, slots=True)
class AgentServerConfig:
    """How the agent server behaves."""

    secret: bytes
    """The shared secret the gateway signs its bearer tokens with (>= 32 bytes)."""
    mode: str = "echo"
    """``echo``, ``pattern`` or ``probe``."""
    talk_ms: int = 2000
    listen_ms: int = 2000
    tone_hz: float = 440.0
    fixture: Path | None = None
    """WAV file to talk in pattern mode instead of the tone."""
    hangup_after_ms: int | None = None
    start_timeout_s: float = 5.0
    """The gateway must send ``start`` this soon after the handshake."""
    timing: bool = False
    """Record the time and size of every audio message (see :class:`CallTiming`)."""


class CallLog:
    """The records of ended calls (the newest :data:`_MAX_RECORDS`), and a way to wait."""

    def __init__(self) -> None:
        self.records: deque[CallRecord] = deque(maxlen=_MAX_RECORDS)
        self.total = 0
        """Calls ended since start, including records no longer kept."""
        self._changed = asyncio.Event()

    def add(self, record: CallRecord) -> None:
        """Keep a record and wake the waiters."""
        self.records.append(record)
        self.total += 1
        self._changed.set()

    async def wait_for(self, total: int) -> None:
        """Wait until ``total`` calls have ended."""
        while self.total < total:
            self._changed.clear()
            await self._changed.wait()


_CALLS: Final = web.AppKey("calls", CallLog)


@dataclass(slots=True)
class CallRecord:
    """One call as the agent saw it."""

    call_id: str
    agent_id: str
    mode: str
    started_at: float
    """Unix time of ``start``."""
    duration_s: float = 0.0
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    errors_in: int = 0
    stop_reason: str | None = None
    close_code: int | None = None
    """The close code the gateway sent (or answered ours with)."""
    core: dict[str, Any] = field(default_factory=dict)
    timing: CallTiming | None = None


@dataclass(slots=True)
class CallTiming:
    """When each audio message came and went (``time.monotonic()`` seconds, bytes)."""

    start_at: float
    """When ``start`` arrived."""
    in_at: list[float] = field(default_factory=list)
    in_bytes: list[int] = field(default_factory=list)
    out_at: list[float] = field(default_factory=list)
    out_bytes: list[int] = field(default_factory=list)


def core_factory(config: AgentServerConfig) -> Callable[[Start], AgentCore]:
    """The per-call core builder for ``config.mode``.

    Raises:
        ValueError: an unknown mode, or an unusable fixture.
    """
    if config.mode == "echo":
        return EchoCore
    if config.mode == "probe":
        return ProbeCore
    if config.mode != "pattern":
        raise ValueError(f"expected mode echo, pattern or probe, got {config.mode!r}")
    raw, raw_rate = load_wav(config.fixture) if config.fixture else (b"", 0)
    sources: dict[int, bytes] = {}

    def source(rate: int) -> bytes:
        if rate not in sources:
            if not raw:
                sources[rate] = tone(rate, config.tone_hz)
            else:
                resampler = Resampler(raw_rate, rate)
                sources[rate] = resampler.process(raw) + resampler.flush()
        return sources[rate]

    def build(start: Start) -> AgentCore:
        return PatternCore(
            start,
            source(start.agent_audio.sample_rate),
            talk_ms=config.talk_ms,
            listen_ms=config.listen_ms,
            hangup_after_ms=config.hangup_after_ms,
        )

    return build


def make_app(config: AgentServerConfig) -> web.Application:
    """The agent server's aiohttp application (routes ``/agents/{agent_id}``, ``/stats``,
    ``/stats/take``).

    Raises:
        ValueError: as :func:`core_factory`.
    """
    factory = core_factory(config)
    app = web.Application()
    app[_CALLS] = CallLog()
    app[_SOCKETS] = weakref.WeakSet()

    async def agent(request: web.Request) -> web.StreamResponse:
        return await _agent_call(request, config, factory)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(_stats_json(request.app))

    async def take(request: web.Request) -> web.Response:
        return web.json_response(_stats_json(request.app, take=True))

    async def going_away(app: web.Application) -> None:
        sockets = app[_SOCKETS]
        for ws in list(sockets):
            await ws.close(code=CloseCode.GOING_AWAY, message=b"agent server shutting down")

    app.router.add_get("/agents/{agent_id}", agent)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/take", take)
    app.on_shutdown.append(going_away)
    return app


def call_records(app: web.Application) -> list[CallRecord]:
    """The records of the calls that have ended, oldest first."""
    return list(app[_CALLS].records)


async def wait_for_calls(app: web.Application, total: int) -> None:
    """Wait until ``total`` calls have ended on ``app`` (callers bound it with a timeout)."""
    await app[_CALLS].wait_for(total)


def _stats_json(app: web.Application, *, take: bool = False) -> dict[str, Any]:
    """``active`` calls, calls ``ended`` since start, the records kept (``take``: forgotten)."""
    calls = app[_CALLS]
    records = [asdict(r) for r in calls.records]
    if take:
        calls.records.clear()
    return {"active": len(app[_SOCKETS]), "ended": calls.total, "calls": records}


def _authorize(request: web.Request, config: AgentServerConfig) -> str:
    """Check the bearer token (docs/agent-protocol.md §1.1); return the call id in it."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not token:
            raise AgentError("missing bearer token", reason="unauthorized")
        claims = verify_agent_token(
            token.strip(), config.secret, agent_id=request.match_info["agent_id"], now=time.time()
        )
    except AgentError:
        raise web.HTTPUnauthorized(
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from None
    return claims.call_id


async def _agent_call(
    request: web.Request, config: AgentServerConfig, factory: Callable[[Start], AgentCore]
) -> web.StreamResponse:
    call_id = _authorize(request, config)
    ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_AUDIO_BYTES)
    await ws.prepare(request)
    request.app[_SOCKETS].add(ws)
    start = await _receive_start(ws, call_id, request.match_info["agent_id"], config)
    if start is None:
        return ws
    began = time.monotonic()
    record = CallRecord(start.call_id, start.agent_id, config.mode, time.time())
    if config.timing:
        record.timing = CallTiming(began)
    core = factory(start)
    try:
        await _run_call(ws, core, record)
    finally:
        record.duration_s = round(time.monotonic() - began, 3)
        record.close_code = ws.close_code
        record.core = _core_stats(core)
        request.app[_CALLS].add(record)
    return ws


def _core_stats(core: AgentCore) -> dict[str, Any]:
    stats = getattr(core, "stats", None)
    snapshot = stats() if callable(stats) else None
    if is_dataclass(snapshot) and not isinstance(snapshot, type):
        return asdict(snapshot)
    return {}


async def _receive_start(
    ws: web.WebSocketResponse, call_id: str, agent_id: str, config: AgentServerConfig
) -> Start | None:
    """The first message must be a ``start`` for the token's call, in our major version."""
    try:
        msg = await ws.receive(timeout=config.start_timeout_s)
        start = decode_gateway_message(msg.data) if msg.type is WSMsgType.TEXT else None
    except (TimeoutError, AgentError):
        start = None
    if (
        isinstance(start, Start)
        and start.protocol == PROTOCOL
        and (start.call_id, start.agent_id) == (call_id, agent_id)
    ):
        return start
    # RFC 6455 §7.4.1: 1008, the gateway broke this agent's policy (docs §4 "protocol").
    await ws.close(code=CloseCode.POLICY_VIOLATION, message=b"expected start")
    return None


async def _run_call(ws: web.WebSocketResponse, core: AgentCore, record: CallRecord) -> None:
    """Feed the core until the gateway closes; this task is the socket's only writer."""
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:
            if record.timing is not None:
                record.timing.in_at.append(time.monotonic())
                record.timing.in_bytes.append(len(msg.data))
            record.frames_in += 1
            record.bytes_in += len(msg.data)
            outputs = core.receive_audio(msg.data)
        elif msg.type is WSMsgType.TEXT:
            outputs = await _on_text(ws, core, record, msg.data)
        else:
            continue
        for item in outputs:
            await _send(ws, item, record)


async def _on_text(
    ws: web.WebSocketResponse, core: AgentCore, record: CallRecord, text: str
) -> list[AgentItem]:
    try:
        message = decode_gateway_message(text)
    except AgentError as exc:
        record.errors_in += 1
        await ws.send_str(encode_message(Error(code=exc.reason, message=str(exc))))
        return []
    if isinstance(message, UnknownMessage | Start):
        return []
    record.messages_in += 1
    if isinstance(message, Stop):
        record.stop_reason = message.reason
    return core.receive_message(message)


async def _send(ws: web.WebSocketResponse, item: AgentItem, record: CallRecord) -> None:
    if ws.closed:
        return
    if isinstance(item, bytes):
        record.frames_out += 1
        record.bytes_out += len(item)
        if record.timing is not None:
            record.timing.out_at.append(time.monotonic())
            record.timing.out_bytes.append(len(item))
        await ws.send_bytes(item)
    else:
        record.messages_out += 1
        await ws.send_str(encode_message(item))


# -- the process -------------------------------------------------------------------------


async def serve(config: AgentServerConfig, host: str, port: int) -> dict[str, Any]:
    """Serve until SIGTERM or SIGINT, then close calls with 1001; return the stats."""
    app = make_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    sys.stdout.write(f"agent server listening on ws://{bound_host}:{bound_port}/agents/\n")
    sys.stdout.flush()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    return _stats_json(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.agent_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument("--secret", required=True, help="shared secret, >= 32 characters")
    parser.add_argument("--mode", choices=("echo", "pattern", "probe"), default="echo")
    parser.add_argument("--talk-ms", type=int, default=2000)
    parser.add_argument("--listen-ms", type=int, default=2000)
    parser.add_argument("--tone-hz", type=float, default=440.0)
    parser.add_argument("--fixture", type=Path, help="mono PCM16 WAV to talk (pattern mode)")
    parser.add_argument("--hangup-after-ms", type=int, help="pattern mode: hang up after this")
    parser.add_argument("--stats-file", type=Path, help="write per-call records here on exit")
    parser.add_argument(
        "--timing", action="store_true", help="record each audio message's time in /stats"
    )
    args = parser.parse_args(argv)
    if len(args.secret.encode()) < 32:
        parser.error("--secret must be at least 32 bytes (HS256 key, RFC 7518 §3.2)")
    config = AgentServerConfig(
        secret=args.secret.encode(),
        mode=args.mode,
        talk_ms=args.talk_ms,
        listen_ms=args.listen_ms,
        tone_hz=args.tone_hz,
        fixture=args.fixture,
        hangup_after_ms=args.hangup_after_ms,
        timing=args.timing,
    )
    summary = tester_loop.run(serve(config, args.host, args.port))
    if args.stats_file is not None:
        args.stats_file.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
