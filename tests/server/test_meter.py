"""The per-call meter: batched counts, drop deltas, sampled timings, one start/end pair."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from gateway.server.meter import FLUSH_FRAMES, SAMPLE_EVERY, CallMeter
from tests.ops.promtext import Samples, scrape, value


class Clock:
    """A monotonic clock the test sets."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def _meter(clock: Clock | None = None) -> tuple[CallMeter, CollectorRegistry]:
    registry = CollectorRegistry()
    meter = CallMeter(GatewayMetrics(registry), "plivo", "tenant-1", clock=clock or Clock())
    return meter, registry


def _frames(samples: Samples, direction: str) -> float:
    return value(samples, "gateway_frames_total", carrier="plivo", direction=direction)


def test_counts_reach_prometheus_only_on_flush_and_exactly() -> None:
    meter, registry = _meter()
    due = [meter.caller_frame() for _ in range(FLUSH_FRAMES - 1)]
    assert not any(due)
    assert _frames(scrape(registry), "in") == 0  # batched, not yet flushed
    assert meter.caller_frame()  # the FLUSH_FRAMES-th frame asks for a flush
    meter.released(3, head_due=None, sent_at=1.0, continuous=False)
    meter.flush({})
    samples = scrape(registry)
    assert _frames(samples, "in") == FLUSH_FRAMES
    assert _frames(samples, "out") == 3
    meter.flush({})  # nothing new: nothing added
    assert _frames(scrape(registry), "in") == FLUSH_FRAMES


def test_drops_are_added_as_deltas_of_the_running_totals() -> None:
    meter, registry = _meter()
    meter.flush({"agent_slow": 2, "cleared": 5})
    meter.flush({"agent_slow": 2, "cleared": 9})
    meter.ended("caller_hangup", {"agent_slow": 3, "cleared": 9})
    samples = scrape(registry)
    assert value(samples, "gateway_frames_dropped_total", reason="agent_slow") == 3
    assert value(samples, "gateway_frames_dropped_total", reason="cleared") == 9


def test_start_and_end_pair_once_and_end_flushes() -> None:
    meter, registry = _meter()
    meter.started()
    meter.started()
    assert value(scrape(registry), "gateway_calls_active", carrier="plivo") == 1
    meter.caller_frame()
    meter.ended("drain", {})
    meter.ended("drain", {})
    samples = scrape(registry)
    assert value(samples, "gateway_calls_active", carrier="plivo") == 0
    assert value(samples, "gateway_calls_total", carrier="plivo", outcome="drain") == 1
    assert _frames(samples, "in") == 1


def test_timings_are_sampled_first_then_one_in_n() -> None:
    clock = Clock()
    meter, registry = _meter(clock)
    for i in range(SAMPLE_EVERY * 3):
        clock.now = i * 0.02 + 0.0004  # handed to the agent link 0.4 ms after the read
        meter.to_agent(received_at=i * 0.02)
        meter.released(1, head_due=i * 0.02, sent_at=i * 0.02 + 0.001, continuous=True)
    samples = scrape(registry)
    count = "gateway_added_latency_seconds_count"
    assert value(samples, count, direction="in") == 3
    total = value(samples, "gateway_added_latency_seconds_sum", direction="in")
    assert abs(total - 3 * 0.0004) < 1e-9
    assert clock.reads == 3  # the clock is read for the observed frames only
    assert value(samples, "gateway_pacing_lateness_seconds_count") == 3
    # Jitter needs a previous release: the first sample has none, later ones do.
    assert value(samples, "gateway_pacing_jitter_seconds_count") == 2
    assert value(samples, "gateway_pacing_jitter_seconds_sum") == 0  # steady 1 ms late


def test_out_latency_counts_from_arrival_on_an_idle_pacer_to_the_send() -> None:
    clock = Clock()
    meter, registry = _meter(clock)
    clock.now = 10.0
    meter.agent_audio(queue_was_empty=True)
    clock.now = 10.0005
    meter.agent_audio(queue_was_empty=True)  # still pending: the first arrival counts
    clock.now = 10.003
    # The send's loop time (ms-coarse under uvloop) only times the pacing, not the latency.
    meter.released(1, head_due=10.0, sent_at=10.0, continuous=False)
    clock.now = 11.0
    meter.agent_audio(queue_was_empty=False)  # the agent is ahead: not counted
    clock.now = 11.5
    meter.released(1, head_due=11.0, sent_at=11.5, continuous=True)
    samples = scrape(registry)
    count = "gateway_added_latency_seconds_count"
    assert value(samples, count, direction="out") == 1
    total = value(samples, "gateway_added_latency_seconds_sum", direction="out")
    assert abs(total - 0.003) < 1e-9
