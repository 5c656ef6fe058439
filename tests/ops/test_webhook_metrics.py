"""The webhook dispatcher's metric hook on a real registry, read back from the exposition."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_dispatcher_hook_counts_attempts_deliveries_latency_depth_and_alerts() -> None:
    registry = CollectorRegistry()
    hook = GatewayMetrics(registry).webhooks
    hook.attempt("http_error")
    hook.attempt("timeout")
    hook.attempt("success")
    hook.delivery("delivered", 1.5)
    hook.delivery("dead", 31.0)
    hook.outbox_depth(7)
    hook.alert()
    samples = _samples(registry)
    for outcome, count in (("http_error", 1), ("timeout", 1), ("success", 1)):
        assert samples[("gateway_webhook_attempts_total", (("outcome", outcome),))] == count
    assert samples[("gateway_webhook_attempts_total", (("outcome", "network_error"),))] == 0
    assert samples[("gateway_webhook_deliveries_total", (("outcome", "delivered"),))] == 1
    assert samples[("gateway_webhook_deliveries_total", (("outcome", "dead"),))] == 1
    assert samples[("gateway_webhook_delivery_latency_seconds_count", ())] == 2
    assert samples[("gateway_webhook_delivery_latency_seconds_sum", ())] == 32.5
    assert samples[("gateway_webhook_outbox_depth", ())] == 7
    assert samples[("gateway_webhook_alerts_total", ())] == 1


def test_unknown_outcomes_cannot_grow_the_series() -> None:
    registry = CollectorRegistry()
    hook = GatewayMetrics(registry).webhooks
    hook.attempt("surprise-1")
    hook.attempt("surprise-2")
    hook.delivery("weird", -1.0)
    samples = _samples(registry)
    assert samples[("gateway_webhook_attempts_total", (("outcome", "other"),))] == 2
    assert samples[("gateway_webhook_deliveries_total", (("outcome", "other"),))] == 1
    assert samples[("gateway_webhook_delivery_latency_seconds_sum", ())] == 0.0
    names = {labels for name, labels in samples if name == "gateway_webhook_attempts_total"}
    assert len(names) == 5  # four known outcomes + other
