"""Which Prometheus registry to fill and which to expose, in one process or several.

``rymi-gateway serve --workers N`` runs N processes on one port (SO_REUSEPORT): a scrape
lands on whichever worker the kernel picks. We use prometheus-client's *multiprocess
mode* (https://prometheus.github.io/client_python/multiprocess/) so that any worker's
``/metrics`` reports the whole host: every worker writes its values to memory-mapped
files in ``PROMETHEUS_MULTIPROC_DIR``, and the exposition registry holds one
:class:`~prometheus_client.multiprocess.MultiProcessCollector` that sums them on scrape.
docs/operations.md explains why this beats one exporter port per worker.

Rules of multiprocess mode, enforced or handled here:

* The variable must be set *before* prometheus-client is imported (the library picks
  its value class at import). The supervising parent sets it and then starts the
  workers; :func:`metrics_registries` refuses a process where the variable was set
  too late, instead of exporting zeros forever.
* The directory must be emptied before the workers start (stale files from a previous
  run would be summed in): :func:`prepare_multiprocess_dir`.
* When a worker dies the parent calls :func:`worker_exited`, which deletes its
  ``live*`` gauge files so ``gateway_calls_active`` stops counting its calls; its
  counters and histograms stay, because a counter must never go down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry, multiprocess, values

from gateway.errors import ConfigError

__all__ = [
    "MULTIPROC_ENV",
    "MetricsRegistries",
    "metrics_registries",
    "prepare_multiprocess_dir",
    "worker_exited",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own variable: the shared directory of the workers' metric files."""


@dataclass(frozen=True, slots=True)
class MetricsRegistries:
    """Where metrics are registered, and what ``/metrics`` serves.

    Attributes:
        metrics: pass this to :class:`~gateway.metrics.GatewayMetrics`.
        exposition: pass this to :func:`gateway.ops.health.metrics_handler`. The same
            object as ``metrics`` in a single process; in multiprocess mode a separate
            registry whose one collector reads every worker's files.
        multiprocess_dir: the shared directory, or None in a single process.
    """

    metrics: CollectorRegistry
    exposition: CollectorRegistry
    multiprocess_dir: Path | None = None


def metrics_registries(environ: Mapping[str, str] | None = None) -> MetricsRegistries:
    """Fresh registries for this process, in multiprocess mode when the variable is set.

    Also turns off the ``*_created`` series (one extra series per labelled counter and
    histogram that no dashboard here uses; multiprocess mode never has them).

    Args:
        environ: the process environment (default ``os.environ``).

    Raises:
        ConfigError: ``PROMETHEUS_MULTIPROC_DIR`` is not a writable directory, or was set
            after prometheus-client had been imported.
    """
    env = os.environ if environ is None else environ
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    raw = env.get(MULTIPROC_ENV, "").strip()
    if not raw:
        registry = CollectorRegistry()
        return MetricsRegistries(metrics=registry, exposition=registry)
    path = Path(raw)
    if not path.is_dir() or not os.access(path, os.W_OK):
        raise ConfigError(MULTIPROC_ENV, f"expected a writable directory, got {raw[:200]!r}")
    if values.ValueClass is values.MutexValue:
        raise ConfigError(
            MULTIPROC_ENV,
            "was set after prometheus-client was imported; set it in the environment "
            "that starts the process (the supervisor does this for --workers)",
        )
    exposition = CollectorRegistry()
    multiprocess.MultiProcessCollector(exposition, path=str(path))  # type: ignore[no-untyped-call]
    return MetricsRegistries(
        metrics=CollectorRegistry(), exposition=exposition, multiprocess_dir=path
    )


def prepare_multiprocess_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) or empty it of metric files, before any worker starts.

    Raises:
        ConfigError: ``path`` exists and is not a directory.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(MULTIPROC_ENV, f"{str(path)[:200]!r} exists and is not a directory")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def worker_exited(pid: int, path: Path) -> None:
    """Forget a dead worker's live gauges (its counters and histograms stay summed)."""
    multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
