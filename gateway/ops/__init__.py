"""Operations: health and readiness endpoints, metrics exposition, event-loop lag and
stalls, drain, and the multi-worker supervisor.

The metric definitions live in :mod:`gateway.metrics`, logging in :mod:`gateway.log`.
Wiring, for the app factory::

    registries = metrics_registries()                  # once per process
    metrics = GatewayMetrics(registries.metrics, tenants=ops.metrics_tenants)
    readiness = Readiness(lambda: engine.draining,
                          {"coordination": coordination.ping, "database": state.ping})
    add_ops_routes(app, exposition=registries.exposition, readiness=readiness)
    app.cleanup_ctx.append(loop_lag_ctx(metrics.observe_loop_lag))
    app.cleanup_ctx.append(stall_watch_ctx())           # logs where the loop stalled

See docs/operations.md ("Wiring") for the serve loop with :class:`Drain` and
:class:`Supervisor`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.ops.drain import Drain, DrainPhase
from gateway.ops.gcpause import GcPauseObserver, freeze_startup_heap, gc_pause_ctx
from gateway.ops.health import (
    HEALTHZ_PATH,
    METRICS_PATH,
    READYZ_PATH,
    Readiness,
    ReadinessReport,
    healthz_handler,
    metrics_handler,
    readyz_handler,
)
from gateway.ops.looplag import LoopLagMonitor, loop_lag_ctx
from gateway.ops.registry import (
    MULTIPROC_ENV,
    MetricsRegistries,
    metrics_registries,
    prepare_multiprocess_dir,
    worker_exited,
)
from gateway.ops.settings import OpsSettings
from gateway.ops.stallwatch import STALL_WATCH, Stall, StallLog, StallWatch, stall_watch_ctx
from gateway.ops.supervisor import Supervisor, check_workers

__all__ = [
    "HEALTHZ_PATH",
    "METRICS_PATH",
    "MULTIPROC_ENV",
    "READYZ_PATH",
    "STALL_WATCH",
    "Drain",
    "DrainPhase",
    "GcPauseObserver",
    "LoopLagMonitor",
    "MetricsRegistries",
    "OpsSettings",
    "Readiness",
    "ReadinessReport",
    "Stall",
    "StallLog",
    "StallWatch",
    "Supervisor",
    "add_ops_routes",
    "check_workers",
    "freeze_startup_heap",
    "gc_pause_ctx",
    "healthz_handler",
    "loop_lag_ctx",
    "metrics_handler",
    "metrics_registries",
    "prepare_multiprocess_dir",
    "readyz_handler",
    "stall_watch_ctx",
    "worker_exited",
]


def add_ops_routes(
    app: web.Application,
    *,
    exposition: CollectorRegistry,
    readiness: Readiness,
    details: Callable[[], Mapping[str, int]] | None = None,
) -> None:
    """Add ``GET /healthz``, ``/readyz`` and ``/metrics`` to ``app``."""
    app.router.add_get(HEALTHZ_PATH, healthz_handler(details))
    app.router.add_get(READYZ_PATH, readyz_handler(readiness))
    app.router.add_get(METRICS_PATH, metrics_handler(exposition))
