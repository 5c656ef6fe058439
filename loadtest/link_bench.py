"""CPU per agent-audio round trip of each WebSocket agent link (prints figures; asserts nothing).

Run: ``.venv/bin/python -m loadtest.link_bench [--links 100] [--seconds 3] [--runs 3]``.

The reference agent server runs in its own process in ``probe`` mode (each caller frame
straight back). This process opens ``--links`` links of one kind, sends each a 640-byte
frame (20 ms at 16 kHz) every 20 ms, as the call engine would, and takes the echoes:
through the audio sink (the engine's path for agent audio) or through ``receive()``.
What is measured is this process's CPU time (``time.process_time``) over the steady
part of a run, divided by the frames sent: the link's cost of one frame out and its
echo back, plus this harness's (the same for every kind). Best of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway.bridge import AgentLink, LinkTransport, make_link
from gateway.bridge.protocol import Start, Stop
from loadtest.procs import Spawned, free_port

__all__ = ["Kind", "RunResult", "main", "measure"]

_SECRET = "link-bench-secret-0123456789abcdef0123"  # noqa: S105 - a throwaway test key
_FRAME = bytes(640)
_TICK_S = 0.020
_WARMUP_TICKS = 25  # 0.5 s of traffic before the clock starts


@dataclass(frozen=True, slots=True)
class Kind:
    """One way to run a link: its WebSocket client, and how agent audio comes back."""

    transport: LinkTransport
    sink: bool

    @property
    def label(self) -> str:
        return f"{self.transport} ({'sink' if self.sink else 'receive()'})"


KINDS = (Kind("picows", sink=True), Kind("picows", sink=False), Kind("aiohttp", sink=True))
"""aiohttp reads inside ``receive()``: its sink and its receive() are the same path."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """One run of one kind."""

    frames_sent: int
    frames_back: int
    cpu_s: float
    """User and kernel (the socket system calls, loopback TCP included)."""

    @property
    def us_per_frame(self) -> float:
        return self.cpu_s / self.frames_sent * 1e6


def _start(n: int) -> Start:
    return Start(
        call_id=f"bench-{n}",
        tenant_id="bench",
        agent_id="bench-agent",
        from_="+14155550100",
        to="+14155550199",
        carrier="twilio",
        direction="inbound",
        max_duration_s=600,
    )


async def _reader(link: AgentLink, count: Callable[[bytes], None]) -> None:
    async for item in link:  # the engine's reader task: control messages, or all items
        if isinstance(item, bytes):
            count(item)


async def measure(url: str, kind: Kind, links: int, seconds: float) -> RunResult:
    """Open ``links`` links of ``kind`` to ``url``, run the traffic, return the CPU used."""
    back = [0]

    def count(pcm: bytes) -> None:
        back[0] += 1

    async with aiohttp.ClientSession() as http:
        opened = [
            make_link(url, session=http, secret=_SECRET.encode(), transport=kind.transport)
            for _ in range(links)
        ]
        await asyncio.gather(*(link.open(_start(n)) for n, link in enumerate(opened)))
        if kind.sink:
            for link in opened:
                link.set_audio_sink(count)
        readers = [asyncio.create_task(_reader(link, count)) for link in opened]
        result = await _traffic(opened, seconds, back)
        await asyncio.gather(*(link.close(Stop(reason="caller_hangup")) for link in opened))
        await asyncio.gather(*readers)
    return result


async def _traffic(links: list[AgentLink], seconds: float, back: list[int]) -> RunResult:
    """Send a frame per link every 20 ms; the frames and CPU of the measured part."""
    await _send(links, _WARMUP_TICKS)
    cpu_from, back_from = time.process_time(), back[0]
    measured = await _send(links, round(seconds / _TICK_S))
    await asyncio.sleep(_TICK_S)  # the last echoes
    cpu = time.process_time() - cpu_from
    if back[0] - back_from < measured * 0.99:
        sys.stderr.write(f"warning: {back[0] - back_from} of {measured} frames came back\n")
    return RunResult(measured, back[0] - back_from, cpu)


async def _send(links: list[AgentLink], ticks: int) -> int:
    """A frame per link per 20 ms tick, on the loop's clock; the frames sent."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for tick in range(ticks):
        for link in links:
            link.send_audio(_FRAME)
        await asyncio.sleep(max(0.0, start + (tick + 1) * _TICK_S - loop.time()))
    return ticks * len(links)


def _agent_server(log: Path, port: int) -> Spawned:
    argv = [sys.executable, "-m", "loadtest.agent_server", "--port", str(port)]
    argv += ["--secret", _SECRET, "--mode", "probe"]
    return Spawned(argv, env=dict(os.environ), log=log, grace_s=5.0)


async def _wait_listening(server: Spawned, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while "listening on" not in server.output():
            if not server.alive():
                raise RuntimeError(f"the agent server died:\n{server.output()}")
            await asyncio.sleep(0.05)


async def _bench(args: argparse.Namespace) -> list[tuple[Kind, list[RunResult]]]:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/agents/bench-agent"
    with tempfile.TemporaryDirectory() as tmp, _agent_server(Path(tmp) / "agent.log", port) as srv:
        await _wait_listening(srv)
        results = []
        for kind in KINDS:
            runs = [await measure(url, kind, args.links, args.seconds) for _ in range(args.runs)]
            results.append((kind, runs))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run every kind, print the table."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.link_bench", description=__doc__)
    parser.add_argument("--links", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured part of a run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    results = asyncio.run(_bench(args))
    out = sys.stdout
    out.write(
        f"{args.links} links, {args.seconds:g} s per run, {args.loop} loop, best of {args.runs}\n\n"
    )
    out.write("| link (agent audio via) | µs CPU per frame sent+echoed | all runs |\n")
    out.write("|---|---:|---|\n")
    for kind, runs in results:
        per = [r.us_per_frame for r in runs]
        all_runs = ", ".join(f"{v:.1f}" for v in per)
        out.write(f"| {kind.label} | {min(per):.1f} | {all_runs} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
