"""A real agent process speaking ``rymi-agent/1`` as the *agent*: echo or talk/listen.

Run::

    python -m loadtest.agent_server --host 127.0.0.1 --port 9100 --secret "$SECRET" \\
        --mode echo
    python -m loadtest.agent_server --port 9100 --secret "$SECRET" --mode pattern \\
        --talk-ms 2000 --listen-ms 3000 --fixture loadtest/data/two_phrases_16k.wav

An agent's pipeline URL is then ``ws://HOST:PORT/agents/<agent_id>``: the gateway's bearer
token must be signed with ``--secret`` and name that agent id as its audience (else HTTP
401, RFC 6750 §3.1). ``GET /stats`` returns the per-call records as JSON; ``GET
/stats/take`` returns the oldest 25 of them and forgets them, with ``more`` while records
are left (a soak reads the records of the calls ended since it last asked, so neither
side holds an hour of timings, and a few at a time, so that writing them never holds
this server's loop). Each record's timing arrays are base64 of their little-endian
bytes (:func:`~loadtest.agent_call.records_by_call` unpacks them); ``--stats-file`` also
writes the records kept on shutdown. SIGTERM or SIGINT closes open calls with 1001 (going
away, RFC 6455 §7.4.1) and exits 0. The first line on stdout gives the bound address
(useful with ``--port 0``).

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

Two edges serve the same calls (:class:`~loadtest.agent_call.AgentCall`: the start
policy, the core, the record): the process serves with picows
(:mod:`loadtest.agent_picows`), which parses and writes frames in C and calls back per
frame with no task wake-up, so the agent costs the shared cores less per call; and
:func:`make_app` is an aiohttp application of the same server for in-process use (the
gateway's tests run their agent peer in the test's loop with it). The process runs on
uvloop when importable (:mod:`loadtest.loop`): it shares the cores with the gateway it
helps measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
from aiohttp import WSMsgType, web

from gateway.bridge.builtin import AgentCore
from gateway.bridge.protocol import MAX_AUDIO_BYTES, Start
from gateway.errors import CloseCode
from loadtest import loop as tester_loop
from loadtest.agent_call import (
    AgentCall,
    AgentServerConfig,
    CallLog,
    CallRecord,
    CallTiming,
    authorize,
    core_factory,
    stats_json,
)
from loadtest.agent_picows import AgentServer

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

_SOCKETS: Final = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
_CALLS: Final = web.AppKey("calls", CallLog)


def make_app(config: AgentServerConfig) -> web.Application:
    """The agent server as an aiohttp application (routes ``/agents/{agent_id}``,
    ``/stats``, ``/stats/take``), for in-process use.

    Raises:
        ValueError: as :func:`~loadtest.agent_call.core_factory`.
    """
    factory = core_factory(config)
    app = web.Application()
    app[_CALLS] = CallLog()
    app[_SOCKETS] = weakref.WeakSet()

    async def agent(request: web.Request) -> web.StreamResponse:
        return await _agent_call(request, config, factory)

    async def stats(request: web.Request) -> web.Response:
        return _json(stats_json(request.app[_CALLS], len(request.app[_SOCKETS])))

    async def take(request: web.Request) -> web.Response:
        app = request.app
        return _json(stats_json(app[_CALLS], len(app[_SOCKETS]), take=True))

    async def going_away(app: web.Application) -> None:
        sockets = app[_SOCKETS]
        for ws in list(sockets):
            await ws.close(code=CloseCode.GOING_AWAY, message=b"agent server shutting down")

    app.router.add_get("/agents/{agent_id}", agent)
    app.router.add_get("/stats", stats)
    app.router.add_get("/stats/take", take)
    app.router.add_post("/stats/take", take)
    app.on_shutdown.append(going_away)
    return app


def call_records(app: web.Application) -> list[CallRecord]:
    """The records of the calls that have ended, oldest first."""
    return list(app[_CALLS].records)


async def wait_for_calls(app: web.Application, total: int) -> None:
    """Wait until ``total`` calls have ended on ``app`` (callers bound it with a timeout)."""
    await app[_CALLS].wait_for(total)


async def _agent_call(
    request: web.Request, config: AgentServerConfig, factory: Callable[[Start], AgentCore]
) -> web.StreamResponse:
    agent_id = request.match_info["agent_id"]
    call_id = authorize(request.headers.get("Authorization", ""), config.secret, agent_id)
    if call_id is None:
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_AUDIO_BYTES)
    await ws.prepare(request)
    request.app[_SOCKETS].add(ws)
    call = AgentCall(config, factory, call_id, agent_id)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    call.peer_port = int(peer[1]) if peer else None
    try:
        msg = await ws.receive(timeout=config.start_timeout_s)
        first = msg.data if msg.type is WSMsgType.TEXT else None
    except TimeoutError:
        first = None
    if not call.begin(first):
        await ws.close(code=CloseCode.POLICY_VIOLATION, message=b"expected start")
        return ws
    try:
        await _run_call(ws, call)
    finally:
        record = call.end(ws.close_code)
        if record is not None:
            request.app[_CALLS].add(record)
    return ws


async def _run_call(ws: web.WebSocketResponse, call: AgentCall) -> None:
    """Feed the call until the gateway closes; this task is the socket's only writer."""
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:
            outputs = call.audio(msg.data)
        elif msg.type is WSMsgType.TEXT:
            reply, outputs = call.text(msg.data)
            if reply is not None:
                await ws.send_str(reply)
        else:
            continue
        for item in outputs:
            if ws.closed:
                break
            wire = call.outgoing(item)
            if isinstance(wire, bytes):
                await ws.send_bytes(wire)
            else:
                await ws.send_str(wire)


# -- the process -------------------------------------------------------------------------


async def serve(config: AgentServerConfig, host: str, port: int) -> dict[str, Any]:
    """Serve until SIGTERM or SIGINT, then close calls with 1001; return the stats."""
    server = AgentServer(config)
    bound_host, bound_port = await server.start(host, port)
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
        await server.close()
    return server.stats()


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


def _json(value: Any) -> web.Response:
    """A JSON response encoded by msgspec (records of many calls: see agent_picows)."""
    return web.Response(body=msgspec.json.encode(value), content_type="application/json")
