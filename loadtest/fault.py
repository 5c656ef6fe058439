"""Scripted fault runs. ``malformed``: bad messages on side sockets next to healthy calls.

Healthy calls run as in ``rymi-loadtest run`` while side calls, each answered and
admitted like any other, open their media socket and send one malformed message:

=================  ===========================================  ==============================
kind               what                                         close code expected
=================  ===========================================  ==============================
``bad_json``       a text frame that is not JSON, after start   1007 invalid payload
``oversized``      a text frame over the 64 KiB message cap     1009 message too big
``invalid_utf8``   a text frame that is not UTF-8 (RFC 6455     1007 invalid payload
                   §8.1), after start
``binary``         a binary frame where Twilio/Plivo send JSON  1003 unsupported data
                   text, after start
``out_of_order``   caller audio before the stream's start       1002 protocol error
=================  ===========================================  ==============================

The run passes when every side socket was closed with its expected code and the healthy
calls were clean: all completed, nothing lost, duplicated or reordered (measured per
frame with ``--agent external``; with the built-in echo, completion and billing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from rich.console import Console

from gateway import carriers
from gateway.errors import CloseCode
from loadtest.audio import carrier_audio, load_fixture
from loadtest.environment import Environment, EnvOptions, environment
from loadtest.player import CallPlan, CallResult, answer, new_call_id
from loadtest.report import billed_report
from loadtest.run import RunConfig, parse_mix, run_load
from loadtest.safety import check_target

__all__ = ["EXPECTED", "kinds_for", "run_fault"]

EXPECTED: dict[str, CloseCode] = {
    "bad_json": CloseCode.INVALID_PAYLOAD,
    "oversized": CloseCode.MESSAGE_TOO_BIG,
    "invalid_utf8": CloseCode.INVALID_PAYLOAD,
    "binary": CloseCode.UNSUPPORTED_DATA,
    "out_of_order": CloseCode.PROTOCOL_ERROR,
}
_SIDE_CONCURRENCY = 16
_CLOSE_TIMEOUT_S = 10.0


def kinds_for(carrier: str) -> list[str]:
    """The malformed kinds that apply to ``carrier`` (Vonage's audio *is* binary)."""
    return [k for k in EXPECTED if not (carrier == "vonage" and k == "binary")]


@dataclass(frozen=True, slots=True)
class SideOutcome:
    """One side socket: what was sent and how the gateway closed it."""

    carrier: str
    kind: str
    close_code: int | None
    error: str | None = None


async def run_fault(args: argparse.Namespace, options: EnvOptions, console: Console) -> int:
    """``rymi-loadtest fault malformed``; returns the exit code."""
    mix = parse_mix(args.mix)
    config = RunConfig(calls=args.healthy, mix=mix, ramp=20.0, hold_s=args.hold)
    async with environment(options) as env:
        healthy = asyncio.create_task(run_load(env, config))
        await asyncio.sleep(1.0)  # the healthy calls are up first
        began = time.monotonic()
        outcomes = await _side_sockets(env, list(mix), args.bad)
        side_s = time.monotonic() - began
        raw = await healthy
        report = await billed_report(env.database_url, raw)
    by_kind = _by_kind(outcomes)
    bad_ok = all(row["ok"] for row in by_kind.values())
    frames = report["frames"]
    healthy_ok = (
        report["calls"]["completed"] == args.healthy
        and report["calls"]["failed"] == 0
        and frames.get("loss_ratio", 0) == 0
        and not any(
            frames.get(k, 0)
            for k in ("duplicated", "reordered", "excess_inbound", "excess_outbound")
        )
        and report["billing"].get("mismatched", 0) == 0
    )
    result = {
        "fault": "malformed",
        "side_sockets": len(outcomes),
        "side_seconds": round(side_s, 2),
        "by_kind": by_kind,
        "healthy": report,
        "healthy_ok": healthy_ok,
        "malformed_ok": bad_ok,
        "ok": bad_ok and healthy_ok,
    }
    for kind, row in by_kind.items():
        state = "[green]ok[/]" if row["ok"] else "[red]WRONG[/]"
        console.print(
            f"{kind}: {row['sent']} sockets, closed {row['codes']} "
            f"(expected {row['expected']}) {state}"
        )
    console.print(
        f"healthy calls: {report['calls']['completed']}/{args.healthy} completed, "
        f"frames {frames.get('sent', 0)} sent, loss ratio {frames.get('loss_ratio')}, "
        f"billing mismatches {report['billing'].get('mismatched', 0)} "
        + ("[green]ok[/]" if healthy_ok else "[red]NOT clean[/]")
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0 if result["ok"] else 1


def _by_kind(outcomes: list[SideOutcome]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for kind, expected in EXPECTED.items():
        mine = [o for o in outcomes if o.kind == kind]
        if not mine:
            continue
        codes = Counter(str(o.close_code) if o.close_code else (o.error or "none") for o in mine)
        rows[kind] = {
            "sent": len(mine),
            "expected": int(expected),
            "codes": dict(codes),
            "ok": codes == Counter({str(int(expected)): len(mine)}),
        }
    return rows


async def _side_sockets(env: Environment, mix: list[str], count: int) -> list[SideOutcome]:
    plan = [(c, k) for c in mix for k in kinds_for(c)]
    gate = asyncio.Semaphore(_SIDE_CONCURRENCY)
    pcm = load_fixture()
    frames = {c: carrier_audio(c, pcm).frames[0] for c in mix}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(i: int) -> SideOutcome:
            carrier, kind = plan[i % len(plan)]
            async with gate:
                return await _side(http, env, carrier, kind, frames[carrier], i)

        return await asyncio.gather(*(one(i) for i in range(count)))


async def _side(
    http: aiohttp.ClientSession,
    env: Environment,
    carrier: str,
    kind: str,
    frame: bytes,
    index: int,
) -> SideOutcome:
    setup = env.setup.carriers[carrier]
    result = CallResult(CallPlan(index, carrier, 0.0, 0.0), new_call_id(carrier))
    adapter = carriers.get(carrier)
    try:
        media = await answer(http, result, setup, env.public_url)
        if media is None:
            return SideOutcome(carrier, kind, None, f"refused {result.refusal}")
        url, params = media
        check_target(url.replace("ws", "http", 1), env.allowed)
        upgrade = adapter.sign_upgrade_request(
            url, setup.credential, now=time.time(), nonce=str(index)
        )
        side = adapter.simulate_carrier(
            result.carrier_call_id, {k: v for k, v in params.items() if k != "call_uuid"}
        )
        async with http.ws_connect(url, headers=dict(upgrade.headers)) as ws:
            if kind == "out_of_order":
                audio = side.audio(frame)
                await (ws.send_bytes(audio) if isinstance(audio, bytes) else ws.send_str(audio))
            else:
                for message in side.open():
                    await (
                        ws.send_bytes(message)
                        if isinstance(message, bytes)
                        else ws.send_str(message)
                    )
                await _bad(ws, kind)
            await _until_closed(ws)
            return SideOutcome(carrier, kind, ws.close_code)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return SideOutcome(carrier, kind, None, type(exc).__name__)


async def _bad(ws: aiohttp.ClientWebSocketResponse, kind: str) -> None:
    if kind == "bad_json":
        await ws.send_str('{"event": "media", "media": {')
    elif kind == "oversized":
        await ws.send_str('{"event":"media","media":{"payload":"' + "A" * 70_000 + '"}}')
    elif kind == "invalid_utf8":
        await ws.send_frame(b'{"event":"\xff\xfe"}', aiohttp.WSMsgType.TEXT)
    elif kind == "binary":
        await ws.send_bytes(b"\x00" * 160)
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")


async def _until_closed(ws: aiohttp.ClientWebSocketResponse) -> None:
    async with asyncio.timeout(_CLOSE_TIMEOUT_S):
        async for _ in ws:
            pass
