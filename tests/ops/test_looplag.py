"""The event-loop lag monitor sees a blocked loop and feeds the histogram."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.metrics import GatewayMetrics
from gateway.ops import LoopLagMonitor, add_ops_routes, loop_lag_ctx, metrics_registries
from gateway.ops.health import Readiness
from tests.ops.promtext import parse, value

_BLOCK_S = 0.3


async def _wait_for_samples(monitor: LoopLagMonitor, count: int) -> None:
    async with asyncio.timeout(5):
        while monitor.samples < count:  # noqa: ASYNC110 - polls the monitor's own counter
            await asyncio.sleep(0.01)


async def test_a_blocked_loop_is_measured_as_lag() -> None:
    seen: list[float] = []
    monitor = LoopLagMonitor(seen.append, interval_s=0.02)
    monitor.start()
    await _wait_for_samples(monitor, 2)
    time.sleep(_BLOCK_S)  # noqa: ASYNC251 - blocking the loop is the point of this test
    await _wait_for_samples(monitor, len(seen) + 2)
    await monitor.stop()
    # The sleep began at most one interval after the monitor's last wake-up, so its
    # timer fired at least BLOCK - interval late: a lower bound, not a timing guess.
    assert max(seen) >= _BLOCK_S - 0.02 - 0.01
    assert monitor.max_lag_s == max(seen)
    stopped_at = monitor.samples
    await asyncio.sleep(0.05)
    assert monitor.samples == stopped_at  # stop() really stopped it


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        LoopLagMonitor(lambda _: None, interval_s=0)


async def test_cleanup_ctx_feeds_the_histogram_served_on_metrics() -> None:
    metrics = GatewayMetrics(metrics_registries({}).metrics)
    app = web.Application()
    app.cleanup_ctx.append(loop_lag_ctx(metrics.observe_loop_lag, interval_s=0.01))
    add_ops_routes(app, exposition=metrics.registry, readiness=Readiness(lambda: False, {}))
    async with TestClient(TestServer(app, port=0)) as client:
        await asyncio.sleep(0.05)
        time.sleep(0.1)  # noqa: ASYNC251 - a stall the histogram must show
        await asyncio.sleep(0.03)
        samples = parse(await (await client.get("/metrics")).text())
    assert value(samples, "gateway_event_loop_lag_seconds_count") >= 2
    # At least one wake-up was >= 0.1 - 0.01 s late: it is above the 50 ms bucket.
    count = value(samples, "gateway_event_loop_lag_seconds_count")
    assert value(samples, "gateway_event_loop_lag_seconds_bucket", le="0.05") < count
