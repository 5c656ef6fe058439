"""CPU per store operation of one call's life (prints figures; asserts nothing).

Run: ``.venv/bin/python -m loadtest.store_bench [--repeat 300] [--database-url URL]``.

Seeds a Twilio tenant (as ``rymi-loadtest`` does) in a fresh SQLite file, or in the
database at ``--database-url`` (migrated; PostgreSQL too), then runs each operation a
call's set-up and end make ``--repeat`` times, one after another, and prints this
process's CPU time (``time.process_time``: every thread, so a driver's worker thread
counts) and wall time per operation. The sum weighs the carrier credentials three times,
as a Twilio call reads them: to answer, at the media upgrade, and to hang up.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway.config import Settings
from gateway.store.models import CallEnd, CallStart, CallStatus, NumberRoute
from gateway.store.sql_state import SqlState
from loadtest.tenants import CarrierSetup, seed

__all__ = ["OpFigures", "main", "measure"]

_WEIGHTS = {"carrier_credentials": 3}


@dataclass(frozen=True, slots=True)
class OpFigures:
    """One operation, ``repeat`` times: CPU and wall time per operation, microseconds."""

    name: str
    cpu_us: float
    wall_us: float


Op = Callable[[int], Awaitable[object]]


def _operations(state: SqlState, tw: CarrierSetup, route: NumberRoute) -> dict[str, Op]:
    directory, ledger = state.directory, state.ledger
    assert route.agent is not None
    role = route.agent.role
    ids: dict[int, str] = {}

    def call_id(i: int) -> str:
        return ids.setdefault(i, str(uuid.uuid4()))

    def start(i: int) -> CallStart:
        cid = call_id(i)
        return CallStart(
            call_id=cid,
            tenant_id=tw.tenant_id,
            agent_id=tw.agent_id,
            number=tw.number,
            carrier="twilio",
            role=role,
            max_call_duration_s=3600,
            answered_at_ms=int(time.time() * 1000),
            carrier_call_id="CA" + cid.replace("-", ""),
        )

    def end(i: int) -> CallEnd:
        now_ms = int(time.time() * 1000)
        return CallEnd(call_id(i), CallStatus.COMPLETED, "caller_hangup", now_ms, 31_000)

    return {
        "resolve_number": lambda i: directory.resolve_number(tw.number),
        "carrier_credentials": lambda i: directory.carrier_credentials(tw.tenant_id),
        "balance_micros": lambda i: ledger.balance_micros(tw.tenant_id),
        "open_call": lambda i: ledger.open_call(start(i)),
        "get_call": lambda i: ledger.get_call(call_id(i), tw.tenant_id),
        "get_agent": lambda i: directory.get_agent(tw.tenant_id, tw.agent_id),
        "agent_pipeline_secret": lambda i: directory.agent_pipeline_secret(
            tw.tenant_id, tw.agent_id
        ),
        "media_started": lambda i: ledger.media_started(call_id(i), int(time.time() * 1000)),
        "finalize": lambda i: ledger.finalize(end(i)),
    }


async def _time(op: Op, repeat: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(repeat):
        await op(i)
    return (time.process_time() - cpu) / repeat * 1e6, (time.perf_counter() - wall) / repeat * 1e6


async def measure(settings: Settings, repeat: int) -> list[OpFigures]:
    """Seed a tenant in ``settings``' database and time each operation ``repeat`` times."""
    state = await SqlState.open(settings, migrate=True)
    try:
        tw = (await seed(settings, ["twilio"])).carriers["twilio"]
        route = await state.directory.resolve_number(tw.number)
        figures = []
        for name, op in _operations(state, tw, route).items():
            await op(repeat)  # warm: statement caches, a pooled connection (a call of its own)
            cpu_us, wall_us = await _time(op, repeat)
            figures.append(OpFigures(name, cpu_us, wall_us))
        return figures
    finally:
        await state.close()


def total_cpu_us(figures: Sequence[OpFigures]) -> float:
    """CPU of one call's store operations (the credentials read three times)."""
    return sum(f.cpu_us * _WEIGHTS.get(f.name, 1) for f in figures)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # The gateway's own loop (``RYMI_EVENT_LOOP``'s default) where it is installed.
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.store_bench")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--database-url", help="a migrated-or-empty database (default: new SQLite)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="store-bench-") as data_dir:
        environ = {"RYMI_DATA_DIR": data_dir}
        if args.database_url:
            environ["RYMI_DATABASE_URL"] = args.database_url
        settings = Settings.from_env(environ)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            figures = runner.run(measure(settings, args.repeat))
    out = sys.stdout
    out.write(f"{settings.database_url.split(':', 1)[0]}, {args.repeat} of each\n\n")
    out.write("| operation | µs CPU | µs wall |\n|---|---:|---:|\n")
    for f in figures:
        out.write(f"| {f.name} | {f.cpu_us:.0f} | {f.wall_us:.0f} |\n")
    out.write(f"| one call (credentials x3) | {total_cpu_us(figures):.0f} | |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
