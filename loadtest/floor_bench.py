"""The socket floor on this host: what a relay that only moves the bytes costs per call.

Run: ``.venv/bin/python -m loadtest.floor_bench [--calls 120,300] [--relays c,uvloop]``
(prints a table; asserts nothing).

The issue's goal (300 Twilio calls per core with p99 ≤ 2 ms) was set against a C epoll
echo costing 6-8.5 µs per message on another machine. This measures the same kind of
floor here, in the gateway's topology, so the gateway's CPU per call can be read against
it on the same host in the same hour:

* **the relay** (pinned to ``--relay-cpus``) holds two TCP legs per call and does only
  the gateway's socket work: whatever one leg reads is written to the other at once
  (one ``recv`` and one ``send`` per message, over epoll). ``c`` is
  ``loadtest/data/floor_relay.c``, built here with ``$CC`` or ``cc``; ``uvloop`` is the
  same relay as an asyncio protocol on uvloop (:func:`serve_uvloop`), the floor of any
  Python gateway on this loop.
* **the peers** (one C process, pinned to ``--peer-cpus``) play the carrier and the agent:
  every 20 ms per call, one carrier-sized message on the carrier leg and one agent-sized
  message on the agent leg, calls spread evenly over the 20 ms. Each message carries its
  send time, so each one that comes back gives the latency of the whole path.

Per call that is the gateway's four messages per 20 ms: two reads, two writes, and over
loopback each write also runs the receiving side's TCP path and wakes the peer (in the
sender's system call). The relay's CPU (``/proc/<pid>/stat``, user + system) over the
measured part, divided by the calls, is the floor's CPU per call; divided by the
messages relayed, its µs per message (a read and a write).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, cast

from loadtest.affinity import parse_cpus
from loadtest.procs import Spawned, read_proc

__all__ = [
    "RELAYS",
    "FloorError",
    "FloorResult",
    "build",
    "main",
    "measure",
    "serve_uvloop",
]

SOURCE: Final = Path(__file__).parent / "data" / "floor_relay.c"
RELAYS: Final = ("c", "uvloop")
CARRIER_BYTES: Final = 360
"""A Twilio ``media`` message as the carrier sends it: ~350 bytes of JSON, 8 of header."""
AGENT_BYTES: Final = 648
"""20 ms of 16 kHz PCM16 (640 bytes) in a masked binary frame."""
MESSAGES_PER_CALL_S: Final = 100
"""Messages relayed per call per second: one each way per 20 ms (each a read and a write)."""
_WAIT_S: Final = 20.0


class FloorError(RuntimeError):
    """The floor benchmark could not run: no C compiler, or a process failed (says which)."""


@dataclass(frozen=True, slots=True)
class FloorResult:
    """One relay at one level: its CPU over the measured part, and the peers' counts."""

    relay: str
    calls: int
    seconds: float
    relay_cpu_s: float
    sent: int
    received: int
    failed_sends: int
    latency_us: dict[str, int]

    @property
    def cpu_percent(self) -> float:
        """The relay's share of one core."""
        return 100 * self.relay_cpu_s / self.seconds

    @property
    def cpu_percent_per_call(self) -> float:
        return self.cpu_percent / self.calls

    @property
    def us_per_message(self) -> float:
        """CPU per message relayed (a read and a write)."""
        return self.relay_cpu_s / (self.calls * MESSAGES_PER_CALL_S * self.seconds) * 1e6

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def as_dict(self) -> dict[str, Any]:
        derived = {
            "cpu_percent": round(self.cpu_percent, 2),
            "cpu_percent_per_call": round(self.cpu_percent_per_call, 4),
            "us_per_message": round(self.us_per_message, 2),
            "lost": self.lost,
        }
        return asdict(self) | derived


def build(workdir: Path) -> Path:
    """Compile the C relay and peers into ``workdir``; the executable's path."""
    compiler = shlex.split(os.environ.get("CC", "cc"))
    if shutil.which(compiler[0]) is None:
        raise FloorError(f"no C compiler ({compiler[0]}): sudo apt-get install gcc")
    binary = workdir / "floor_relay"
    argv = [*compiler, "-O2", "-Wall", "-Werror", "-o", str(binary), str(SOURCE)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise FloorError(f"building {SOURCE.name} failed:\n{done.stderr}")
    return binary


# -- the uvloop relay ---------------------------------------------------------------------


class _Leg(asyncio.Protocol):
    """One leg: its first 4 bytes name it (call * 2 + leg), then bytes go to the other leg."""

    def __init__(self, legs: dict[int, _Leg]) -> None:
        self._legs = legs
        self._id: int | None = None
        self._hello = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports do not subclass asyncio's: no isinstance check)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._id is None:
            self._hello += data
            if len(self._hello) < 4:
                return
            self._id = int.from_bytes(self._hello[:4], "little")
            self._legs[self._id] = self
            data = self._hello[4:]
            if not data:
                return
        other = self._legs.get(self._id ^ 1)
        if other is not None and other.transport is not None:
            other.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._id is not None:
            self._legs.pop(self._id, None)
            other = self._legs.get(self._id ^ 1)
            if other is not None and other.transport is not None:
                other.transport.close()


async def serve_uvloop() -> None:
    """The relay on uvloop: print ``port N``, then relay until cancelled (SIGTERM)."""
    legs: dict[int, _Leg] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Leg(legs), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"port {port}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


# -- one measurement ----------------------------------------------------------------------


def _relay_argv(relay: str, binary: Path) -> list[str]:
    if relay == "c":
        return [str(binary), "relay"]
    if relay == "uvloop":
        return [sys.executable, "-m", "loadtest.floor_bench", "--serve-uvloop"]
    raise FloorError(f"unknown relay {relay!r}: one of {', '.join(RELAYS)}")


def _wait_line(spawned: Spawned, prefix: str, timeout_s: float = _WAIT_S) -> str:
    """The first line of ``spawned``'s output starting with ``prefix`` (polled)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in spawned.output().splitlines():
            if line.startswith(prefix):
                return line
        if not spawned.alive():
            break
        time.sleep(0.005)
    raise FloorError(f"no {prefix!r} from {spawned.argv[0]}:\n{spawned.output()[-2000:]}")


@contextmanager
def _spawned(argv: list[str], log: Path, cpus: frozenset[int] | None) -> Iterator[Spawned]:
    # Spawned appends to its log, and the lines awaited in it are the same every run: a
    # log left by an earlier run of the same level would answer for this one.
    log.unlink(missing_ok=True)
    with Spawned(argv, env=dict(os.environ), log=log, grace_s=5.0, cpus=cpus) as spawned:
        yield spawned


def measure(
    relay: str,
    calls: int,
    *,
    binary: Path,
    workdir: Path,
    seconds: float = 10.0,
    warmup_s: float = 2.0,
    relay_cpus: frozenset[int] | None = None,
    peer_cpus: frozenset[int] | None = None,
    carrier_bytes: int = CARRIER_BYTES,
    agent_bytes: int = AGENT_BYTES,
) -> FloorResult:
    """Run ``calls`` calls through ``relay`` for ``warmup_s`` + ``seconds``; the figures."""
    tag = f"{relay}-{calls}"
    with _spawned(_relay_argv(relay, binary), workdir / f"relay-{tag}.log", relay_cpus) as server:
        port = int(_wait_line(server, "port ").split()[1])
        argv = [str(binary), "peer", str(port), str(calls), str(carrier_bytes)]
        argv += [str(agent_bytes), str(warmup_s), str(seconds)]
        with _spawned(argv, workdir / f"peer-{tag}.log", peer_cpus) as peers:
            _wait_line(peers, "measuring", warmup_s + _WAIT_S)
            before = read_proc(server.pid)
            _wait_line(peers, "done", seconds + _WAIT_S)
            after = read_proc(server.pid)
            counts = json.loads(_wait_line(peers, "{", _WAIT_S))
    if before is None or after is None:
        raise FloorError(f"the {relay} relay died:\n{server.output()[-2000:]}")
    return FloorResult(
        relay=relay,
        calls=calls,
        seconds=after.at - before.at,
        relay_cpu_s=after.cpu_s - before.cpu_s,
        sent=counts["measured_sent"],
        received=counts["measured_received"],
        failed_sends=counts["failed_sends"],
        latency_us=counts["latency_us"],
    )


# -- command line -------------------------------------------------------------------------


def _table(results: Sequence[FloorResult]) -> str:
    rows = [
        "| relay | calls | CPU | CPU per call | µs per message | latency p50 / p99 / p99.9 "
        "| lost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lat = r.latency_us
        rows.append(
            f"| {r.relay} | {r.calls} | {r.cpu_percent:.1f} % | {r.cpu_percent_per_call:.3f} % "
            f"| {r.us_per_message:.1f} | {lat['p50']} / {lat['p99']} / {lat['p999']} µs "
            f"| {r.lost} |"
        )
    return "\n".join(rows) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.floor_bench", description=__doc__)
    parser.add_argument("--calls", default="120,300", help="levels, comma-separated")
    parser.add_argument("--relays", default=",".join(RELAYS), help="c, uvloop or both")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured part of a run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every level, interleaved")
    parser.add_argument(
        "--carrier-bytes",
        type=int,
        default=CARRIER_BYTES,
        help="carrier message size (Vonage: 644, 20 ms of 16 kHz PCM16 in a masked frame)",
    )
    parser.add_argument("--agent-bytes", type=int, default=AGENT_BYTES, help="agent message size")
    parser.add_argument("--relay-cpus", default="0", help="the relay's CPUs ('' = any)")
    parser.add_argument("--peer-cpus", default="1", help="the peers' CPUs ('' = any)")
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument("--serve-uvloop", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Build, run every relay at every level (interleaved by round), print the table."""
    args = _parser().parse_args(argv)
    if args.serve_uvloop:
        import uvloop

        uvloop.run(serve_uvloop())
        return 0
    allowed = range(os.cpu_count() or 1)
    relay_cpus = parse_cpus(args.relay_cpus, "--relay-cpus", allowed) if args.relay_cpus else None
    peer_cpus = parse_cpus(args.peer_cpus, "--peer-cpus", allowed) if args.peer_cpus else None
    runs = [
        (relay, int(calls))
        for _ in range(args.rounds)
        for calls in args.calls.split(",")
        for relay in args.relays.split(",")
    ]
    results: list[FloorResult] = []
    with tempfile.TemporaryDirectory(prefix="rymi-floor-") as tmp:
        binary = build(Path(tmp))
        for relay, calls in runs:
            result = measure(
                relay,
                calls,
                binary=binary,
                workdir=Path(tmp),
                seconds=args.seconds,
                warmup_s=args.warmup,
                relay_cpus=relay_cpus,
                peer_cpus=peer_cpus,
                carrier_bytes=args.carrier_bytes,
                agent_bytes=args.agent_bytes,
            )
            results.append(result)
            sys.stderr.write(f"{relay} at {calls} calls: {result.cpu_percent:.1f} % CPU\n")
    sys.stdout.write(_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
