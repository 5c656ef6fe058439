"""GC pauses: timed through the collector's own callbacks, and the start-up heap frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from gateway.ops import GcPauseObserver, freeze_startup_heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the test process's collector as it was (nothing frozen)."""
    yield
    gc.unfreeze()


def test_every_collection_is_timed_by_generation_into_the_histogram() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    seen: list[tuple[int, float]] = []

    def observe(generation: int, seconds: float) -> None:
        seen.append((generation, seconds))
        metrics.observe_gc_pause(generation, seconds)

    observer = GcPauseObserver(observe)
    observer.install()
    observer.install()  # idempotent: one callback, one observation per collection
    try:
        gc.collect(2)
        gc.collect(0)
    finally:
        observer.remove()
        observer.remove()
    gc.collect()  # not timed any more
    assert [generation for generation, _ in seen] == [2, 0]
    assert all(seconds >= 0 for _, seconds in seen)
    assert observer.collections == 2
    count = metrics.registry.get_sample_value("gateway_gc_pause_seconds_count", {"generation": "2"})
    assert count == 1


def test_freezing_moves_the_live_heap_out_of_later_scans(unfrozen: None) -> None:
    frozen = freeze_startup_heap()
    assert frozen == gc.get_freeze_count()
    assert frozen > 1000  # pytest, the gateway's imports: far more than a handful
