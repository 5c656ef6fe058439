"""GatewayMetrics: values follow the events, labels stay in their closed sets."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry

from gateway.call_events import EndReason
from gateway.carriers import NAMES as CARRIERS
from gateway.metering import Role
from gateway.metrics import (
    ADDED_LATENCY_BUCKETS,
    OTHER,
    PACING_BUCKETS,
    DropReason,
    GatewayMetrics,
    TenantLabels,
)
from gateway.ops.registry import metrics_registries
from gateway.reasons import RefusalReason
from tests.ops.promtext import scrape, series, value


@pytest.fixture
def metrics() -> GatewayMetrics:
    # The production path: a fresh single-process registry, *_created series off.
    return GatewayMetrics(metrics_registries({}).metrics)


def test_active_and_total_calls_follow_the_calls(metrics: GatewayMetrics) -> None:
    metrics.call_started("twilio")
    metrics.call_started("twilio")
    metrics.call_started("plivo")
    metrics.call_ended("twilio", EndReason.CALLER_HANGUP)
    metrics.call_ended("plivo", "max_duration")

    samples = scrape(metrics.registry)
    assert value(samples, "gateway_calls_active", carrier="twilio") == 1
    assert value(samples, "gateway_calls_active", carrier="plivo") == 0
    assert value(samples, "gateway_calls_active", carrier="vonage") == 0
    assert value(samples, "gateway_calls_total", carrier="twilio", outcome="caller_hangup") == 1
    assert value(samples, "gateway_calls_total", carrier="plivo", outcome="max_duration") == 1
    assert value(samples, "gateway_calls_total", carrier="twilio", outcome="max_duration") == 0


def test_every_closed_series_exists_at_zero_before_any_event(metrics: GatewayMetrics) -> None:
    samples = scrape(metrics.registry)
    for carrier in CARRIERS:
        for outcome in EndReason:
            assert value(samples, "gateway_calls_total", carrier=carrier, outcome=outcome) == 0
        for direction in ("in", "out"):
            assert value(samples, "gateway_frames_total", carrier=carrier, direction=direction) == 0
    for reason in RefusalReason:
        assert value(samples, "gateway_call_refusals_total", reason=reason.value) == 0
    for drop in DropReason:
        assert value(samples, "gateway_frames_dropped_total", reason=drop.value) == 0
    for role in Role:
        assert value(samples, "gateway_billable_seconds_total", role=role.value) == 0
    assert value(samples, "gateway_draining") == 0
    assert not any(name.endswith("_created") for name, _ in samples)


def test_refusals_count_by_reason_and_unknown_reasons_become_other(
    metrics: GatewayMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    metrics.refused(RefusalReason.QUOTA_CONCURRENT_CALLS)
    metrics.refused("quota_exceeded.concurrent_calls")
    with caplog.at_level(logging.WARNING, logger="gateway.metrics"):
        metrics.refused("CA0123456789abcdef-call-id")
        metrics.refused("another bug")

    samples = scrape(metrics.registry)
    reason = "quota_exceeded.concurrent_calls"
    assert value(samples, "gateway_call_refusals_total", reason=reason) == 2
    assert value(samples, "gateway_call_refusals_total", reason=OTHER) == 2
    assert {"reason": "CA0123456789abcdef-call-id"} not in series(
        samples, "gateway_call_refusals_total"
    )
    warnings = [r for r in caplog.records if r.name == "gateway.metrics"]
    assert len(warnings) == 1  # once per label, and without the value itself
    assert "CA0123456789" not in warnings[0].getMessage()


def test_frames_and_drops(metrics: GatewayMetrics) -> None:
    metrics.frames("vonage", "in", 50)
    metrics.frames("vonage", "out")
    metrics.frame_dropped(DropReason.OUTBOUND_OVERFLOW, 3)
    metrics.frame_dropped(DropReason.CLEARED, 0)
    metrics.frame_dropped("weird")

    samples = scrape(metrics.registry)
    assert value(samples, "gateway_frames_total", carrier="vonage", direction="in") == 50
    assert value(samples, "gateway_frames_total", carrier="vonage", direction="out") == 1
    assert value(samples, "gateway_frames_dropped_total", reason="outbound_overflow") == 3
    assert value(samples, "gateway_frames_dropped_total", reason="cleared") == 0
    assert value(samples, "gateway_frames_dropped_total", reason=OTHER) == 1


def test_pacing_histograms_land_in_sub_millisecond_buckets(metrics: GatewayMetrics) -> None:
    metrics.observe_pacing(0.0003, jitter_s=-0.0015)
    metrics.observe_pacing(-0.001)  # early counts as on time

    samples = scrape(metrics.registry)
    name = "gateway_pacing_lateness_seconds_bucket"
    assert value(samples, name, le="0.0001") == 1  # the early one, as 0
    assert value(samples, name, le="0.00025") == 1
    assert value(samples, name, le="0.0005") == 2
    assert value(samples, "gateway_pacing_lateness_seconds_count") == 2
    assert value(samples, "gateway_pacing_jitter_seconds_count") == 1
    assert value(samples, "gateway_pacing_jitter_seconds_bucket", le="0.001") == 0
    assert value(samples, "gateway_pacing_jitter_seconds_bucket", le="0.002") == 1
    assert PACING_BUCKETS[0] < 0.001
    assert PACING_BUCKETS[-1] == 0.1


def test_added_latency_by_direction_with_fine_buckets(metrics: GatewayMetrics) -> None:
    metrics.observe_added_latency("in", 0.00004)
    metrics.observe_added_latency("out", 0.003)

    samples = scrape(metrics.registry)
    name = "gateway_added_latency_seconds_bucket"
    assert value(samples, name, direction="in", le="5e-05") == 1
    assert value(samples, name, direction="out", le="0.002") == 0  # the p99 goal's bound
    assert value(samples, name, direction="out", le="0.0025") == 0
    assert value(samples, name, direction="out", le="0.005") == 1
    assert (ADDED_LATENCY_BUCKETS[0], ADDED_LATENCY_BUCKETS[-1]) == (0.00005, 0.05)


def test_agent_billing_lease_coordination_lag_and_drain(metrics: GatewayMetrics) -> None:
    metrics.agent_connected(0.12)
    metrics.agent_error("timeout")
    metrics.agent_error("malformed")
    metrics.billed(Role.SPECIALIST, 31.2, 2)
    metrics.billed("executive", 0.0, 0)
    metrics.lease_operation("claim", "claimed")
    metrics.lease_operation("renew", "fenced")
    metrics.lease_operation("renew", "exploded")
    metrics.coordination_error("renew")
    metrics.observe_loop_lag(0.03)
    metrics.websocket_rejected(1008)
    metrics.websocket_rejected(4999)
    metrics.set_draining(True)

    s = scrape(metrics.registry)
    assert value(s, "gateway_agent_connect_seconds_bucket", le="0.25") == 1
    assert value(s, "gateway_agent_connect_seconds_bucket", le="0.1") == 0
    assert value(s, "gateway_agent_errors_total", reason="timeout") == 1
    assert value(s, "gateway_agent_errors_total", reason="malformed") == 1
    assert value(s, "gateway_billable_seconds_total", role="specialist") == pytest.approx(31.2)
    assert value(s, "gateway_billed_units_total", role="specialist") == 2
    assert value(s, "gateway_billed_units_total", role="executive") == 0
    assert value(s, "gateway_lease_operations_total", op="claim", outcome="claimed") == 1
    assert value(s, "gateway_lease_operations_total", op="renew", outcome="fenced") == 1
    assert value(s, "gateway_lease_operations_total", op="renew", outcome=OTHER) == 1
    assert value(s, "gateway_coordination_errors_total", op="renew") == 1
    assert value(s, "gateway_event_loop_lag_seconds_bucket", le="0.05") == 1
    assert value(s, "gateway_event_loop_lag_seconds_bucket", le="0.02") == 0
    assert value(s, "gateway_websocket_rejections_total", close_code="1008") == 1
    assert value(s, "gateway_websocket_rejections_total", close_code=OTHER) == 1
    assert value(s, "gateway_draining") == 1
    metrics.set_draining(False)
    assert value(scrape(metrics.registry), "gateway_draining") == 0


def test_tenant_families_are_empty_unless_tenants_are_listed(metrics: GatewayMetrics) -> None:
    metrics.call_started("twilio", tenant_id="t-1")
    metrics.billed("operator", 30, 1, tenant_id="t-1")
    samples = scrape(metrics.registry)
    assert series(samples, "gateway_tenant_calls_active") == []
    assert series(samples, "gateway_tenant_billable_seconds_total") == []


def test_listed_tenants_get_series_and_everyone_else_is_other() -> None:
    metrics = GatewayMetrics(CollectorRegistry(), tenants=TenantLabels(frozenset({"big"})))
    for n in range(300):  # many tenants, still two series
        metrics.call_started("twilio", tenant_id=f"small-{n}")
        metrics.billed("operator", 30, 1, tenant_id=f"small-{n}")
    metrics.call_started("plivo", tenant_id="big")
    metrics.call_started("plivo", tenant_id="big")
    metrics.call_ended("plivo", "caller_hangup", tenant_id="big")
    metrics.billed("concierge", 45.5, 2, tenant_id="big")

    samples = scrape(metrics.registry)
    assert sorted(d["tenant"] for d in series(samples, "gateway_tenant_calls_active")) == [
        "big",
        OTHER,
    ]
    assert value(samples, "gateway_tenant_calls_active", tenant="big") == 1
    assert value(samples, "gateway_tenant_calls_active", tenant=OTHER) == 300
    assert value(samples, "gateway_tenant_billable_seconds_total", tenant="big") == 45.5
    assert value(samples, "gateway_tenant_billable_seconds_total", tenant=OTHER) == 9000


_ANY_TEXT = st.text(max_size=40)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_ANY_TEXT, _ANY_TEXT, _ANY_TEXT), max_size=30))
def test_no_input_can_grow_the_series_count(calls: list[tuple[str, str, str]]) -> None:
    baseline = GatewayMetrics(CollectorRegistry())
    for method in (baseline.refused, baseline.agent_error, baseline.frame_dropped):
        method(OTHER)
    baseline.call_ended(OTHER, OTHER)
    baseline.lease_operation(OTHER, OTHER)
    baseline.coordination_error(OTHER)
    baseline.frames(OTHER, OTHER)
    baseline.billed(OTHER, 1, 1)
    baseline.websocket_rejected(1)
    baseline.observe_added_latency(OTHER, 0.001)
    most = len(scrape(baseline.registry))

    metrics = GatewayMetrics(CollectorRegistry())
    for a, b, c in calls:
        metrics.call_started(a, tenant_id=c)
        metrics.call_ended(a, b, tenant_id=c)
        metrics.refused(b)
        metrics.frames(a, c)
        metrics.frame_dropped(c)
        metrics.agent_error(a)
        metrics.billed(b, 1.0, 1, tenant_id=c)
        metrics.lease_operation(a, b)
        metrics.coordination_error(c)
        metrics.observe_added_latency(b, 0.001)
    assert len(scrape(metrics.registry)) <= most


def test_registries_are_injected_never_global() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    GatewayMetrics(first)
    GatewayMetrics(second)  # would raise "Duplicated timeseries" on a shared registry
    assert not any(name.startswith("gateway_") for name in REGISTRY._names_to_collectors)


def test_names_follow_the_conventions(metrics: GatewayMetrics) -> None:
    for family in metrics.registry.collect():
        labels = {label for sample in family.samples for label in sample.labels}
        assert not labels & {"call_id", "call", "number", "phone", "tenant_id"}
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        if "tenant" in labels:
            assert family.name.startswith("gateway_tenant_")
