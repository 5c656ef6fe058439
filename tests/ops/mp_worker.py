"""A gateway-like worker for tests/ops/test_multiprocess.py (run as a subprocess).

It writes metrics the way a worker does, serves ``/metrics`` on a free port, prints the
port, and stays alive until its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

from gateway.metrics import GatewayMetrics
from gateway.ops import Readiness, add_ops_routes, metrics_registries


async def _serve(started: int, ended: int, refused: int) -> None:
    registries = metrics_registries()  # multiprocess mode: PROMETHEUS_MULTIPROC_DIR is set
    metrics = GatewayMetrics(registries.metrics)
    for _ in range(started):
        metrics.call_started("twilio")
    for _ in range(ended):
        metrics.call_ended("twilio", "caller_hangup")
    for _ in range(refused):
        metrics.refused("balance_depleted")
    metrics.observe_pacing(0.001)
    app = web.Application()
    add_ops_routes(app, exposition=registries.exposition, readiness=Readiness(lambda: False, {}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--started", "--ended", "--refused"):
        parser.add_argument(name, type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_serve(args.started, args.ended, args.refused))


if __name__ == "__main__":
    main()
