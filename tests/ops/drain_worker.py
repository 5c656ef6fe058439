"""A minimal gateway-shaped process for the drain and supervisor tests (a subprocess).

It wires the ops pieces the way ``serve`` will: multiprocess-aware metrics, /healthz,
/readyz, /metrics, a :class:`~gateway.ops.drain.Drain` on SIGTERM/SIGINT, and a port
bound with SO_REUSEPORT. Its "calls" are timers: ``POST /call?seconds=S`` starts one that
ends on its own after S seconds (``completed``) or when hung up (``drain``); every end is
appended to ``$DRAIN_LOG`` as ``<pid> <call> <reason>`` (the test's stand-in for the
final usage record). ``POST /inbound`` answers 503 while draining, as the answer route does.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys

from aiohttp import web

from gateway.metrics import GatewayMetrics
from gateway.ops import Readiness, add_ops_routes, metrics_registries
from gateway.ops.drain import Drain


class Calls:
    def __init__(self, metrics: GatewayMetrics, log_path: str) -> None:
        self.metrics = metrics
        self.log_path = log_path
        self.live: dict[str, asyncio.Event] = {}
        self.empty = asyncio.Event()
        self.empty.set()
        self.ids = itertools.count(1)
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, seconds: float) -> str:
        call_id = f"c{next(self.ids)}"
        hangup = self.live[call_id] = asyncio.Event()
        self.empty.clear()
        self.metrics.call_started("twilio")
        task = asyncio.create_task(self._run(call_id, seconds, hangup))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return call_id

    async def _run(self, call_id: str, seconds: float, hangup: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(hangup.wait(), seconds)
            reason = "drain"
        except TimeoutError:
            reason = "completed"
        await asyncio.sleep(0.05)  # finalizing: the record is written after the audio ends
        self._record(call_id, reason)
        self.metrics.call_ended("twilio", "drain" if reason == "drain" else "caller_hangup")
        del self.live[call_id]
        if not self.live:
            self.empty.set()

    def _record(self, call_id: str, reason: str) -> None:
        with open(self.log_path, "a") as handle:  # one short line: fine on the loop
            handle.write(f"{os.getpid()} {call_id} {reason}\n")

    def hang_up_all(self) -> None:
        for event in self.live.values():
            event.set()


async def main(port: int) -> int:
    registries = metrics_registries()
    metrics = GatewayMetrics(registries.metrics)
    calls = Calls(metrics, os.environ["DRAIN_LOG"])
    drain = Drain(
        live_calls=lambda: len(calls.live),
        wait_empty=calls.empty.wait,
        hang_up_all=calls.hang_up_all,
        on_draining=metrics.set_draining,
    )

    async def start_call(request: web.Request) -> web.Response:
        if drain.draining:
            raise web.HTTPServiceUnavailable(text="draining\n")
        call_id = calls.start(float(request.query["seconds"]))
        return web.json_response({"call": call_id, "pid": os.getpid()})

    async def inbound(request: web.Request) -> web.Response:
        if drain.draining:
            raise web.HTTPServiceUnavailable(text="draining\n")
        return web.Response(text="<Response/>")

    app = web.Application()
    app.router.add_post("/call", start_call)
    app.router.add_post("/inbound", inbound)
    add_ops_routes(
        app,
        exposition=registries.exposition,
        readiness=Readiness(lambda: drain.draining, {}),
        details=lambda: {"pid": os.getpid(), "live_calls": len(calls.live)},
    )
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
    drain.install(asyncio.get_running_loop())
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    left = await drain.run()
    await runner.cleanup()
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]))))
