"""/healthz, /readyz and /metrics on a real aiohttp server (port 0)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.metrics import GatewayMetrics
from gateway.ops import Readiness, add_ops_routes, metrics_registries
from gateway.ops.health import Ping
from tests.ops.promtext import parse, value


class Backend:
    """A ping target whose health the test switches."""

    def __init__(self) -> None:
        self.up = True
        self.hang = False
        self.calls = 0

    async def ping(self) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        if not self.up:
            raise ConnectionError("redis://:hunter2-secret@10.0.0.1 refused")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class World:
    def __init__(self) -> None:
        self.draining = False
        self.coordination = Backend()
        self.database = Backend()
        self.clock = Clock()
        self.metrics = GatewayMetrics(metrics_registries({}).metrics)
        self.readiness = Readiness(
            lambda: self.draining,
            {"coordination": self.coordination.ping, "database": self.database.ping},
            timeout_s=0.05,
            clock=self.clock,
        )


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def client(world: World) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    add_ops_routes(
        app,
        exposition=world.metrics.registry,
        readiness=world.readiness,
        details=lambda: {"live_calls": 2},
    )
    async with TestClient(TestServer(app, port=0)) as client:
        yield client


Client = TestClient[web.Request, web.Application]


async def test_healthz_answers_even_when_every_backend_is_down(
    world: World, client: Client
) -> None:
    world.coordination.up = world.database.up = False
    world.draining = True
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "live_calls": 2}
    assert world.coordination.calls == 0  # liveness never pings anything


async def test_readyz_is_ready_when_not_draining_and_backends_answer(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body == {
        "status": "ready",
        "checks": {"draining": "no", "coordination": "ok", "database": "ok"},
    }


async def test_readyz_turns_503_at_once_when_draining_starts(world: World, client: Client) -> None:
    assert (await client.get("/readyz")).status == 200
    world.draining = True  # within the ping cache window: must not wait for it
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"] == {"draining": "yes"}


@pytest.mark.parametrize("failing", ["coordination", "database"])
async def test_readyz_is_503_when_a_backend_fails_and_never_shows_its_error(
    world: World, client: Client, failing: str
) -> None:
    getattr(world, failing).up = False
    response = await client.get("/readyz")
    assert response.status == 503
    text = await response.text()
    assert "hunter2" not in text
    assert "10.0.0.1" not in text
    body = await response.json()
    assert body["status"] == "not_ready"
    assert body["checks"][failing] == "fail"


async def test_a_hanging_ping_counts_as_a_timeout(world: World, client: Client) -> None:
    world.database.hang = True
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"]["database"] == "timeout"


async def test_pings_are_cached_and_single_flight(world: World, client: Client) -> None:
    responses = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
    assert {r.status for r in responses} == {200}
    assert world.readiness.pings_run == 1
    world.coordination.up = False
    world.clock.now += 0.5  # still cached: the outage is not seen yet
    assert (await client.get("/readyz")).status == 200
    world.clock.now += 0.6
    assert (await client.get("/readyz")).status == 503
    assert world.readiness.pings_run == 2
    world.coordination.up = True
    world.clock.now += 1.1
    assert (await client.get("/readyz")).status == 200


async def test_metrics_endpoint_serves_the_registry_as_prometheus_text(
    world: World, client: Client
) -> None:
    world.metrics.call_started("twilio")
    world.metrics.refused("balance_depleted")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse(await response.text())
    assert value(samples, "gateway_calls_active", carrier="twilio") == 1
    assert value(samples, "gateway_call_refusals_total", reason="balance_depleted") == 1

    world.metrics.call_ended("twilio", "caller_hangup")
    samples = parse(await (await client.get("/metrics")).text())
    assert value(samples, "gateway_calls_active", carrier="twilio") == 0


async def test_metrics_endpoint_speaks_openmetrics_when_asked(client: Client) -> None:
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).rstrip().endswith("# EOF")


async def test_readiness_without_pings_depends_on_draining_only() -> None:
    draining = [False]
    pings: dict[str, Ping] = {}
    readiness = Readiness(lambda: draining[0], pings)
    assert (await readiness.check()).ready
    draining[0] = True
    assert not (await readiness.check()).ready
