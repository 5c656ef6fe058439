"""Prometheus figures of the webhook dispatcher (issue 9: deliveries, attempts, latency, depth).

:class:`WebhookDeliveryMetrics` implements the dispatcher's
:class:`gateway.webhooks.alerts.WebhookMetrics` hook on the gateway's injected registry.
Its outcome labels are closed sets, like every other gateway metric: a value outside them
is recorded as ``other``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ATTEMPT_OUTCOMES", "DELIVERY_OUTCOMES", "WebhookDeliveryMetrics"]

ATTEMPT_OUTCOMES = frozenset({"success", "http_error", "timeout", "network_error"})
"""How one delivery attempt can end (gateway/webhooks/dispatcher.py)."""
DELIVERY_OUTCOMES = frozenset({"delivered", "dead"})
"""How a delivery ends: a 2xx, or dead-lettered after the last attempt."""

# From a first-try delivery (tens of ms) to one that ran the whole 1+2+4+8 s schedule
# with five 3 s timeouts (about 30 s), plus a slow outbox.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


def _closed(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


class WebhookDeliveryMetrics:
    """The dispatcher's metrics, registered on ``registry``.

    Args:
        registry: the gateway's registry (never the global one).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts_total = Counter(
            "gateway_webhook_attempts_total",
            "Webhook delivery attempts, by how they ended.",
            ["outcome"],
            registry=registry,
        )
        self.deliveries_total = Counter(
            "gateway_webhook_deliveries_total",
            "Webhook deliveries finished: delivered (2xx) or dead (after the last attempt).",
            ["outcome"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "gateway_webhook_delivery_latency_seconds",
            "Time from the event's creation to its delivery (or dead letter).",
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.outbox_depth_gauge = Gauge(
            "gateway_webhook_outbox_depth",
            "Deliveries pending in the outbox (all tenants; every instance sees the same).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.alerts_total = Counter(
            "gateway_webhook_alerts_total",
            "Dead-letter alerts raised (after the one-per-hour-per-endpoint throttle).",
            registry=registry,
        )
        for outcome in ATTEMPT_OUTCOMES:
            self.attempts_total.labels(outcome)
        for outcome in DELIVERY_OUTCOMES:
            self.deliveries_total.labels(outcome)

    def attempt(self, outcome: str) -> None:
        """One attempt ended."""
        self.attempts_total.labels(_closed(outcome, ATTEMPT_OUTCOMES)).inc()

    def delivery(self, outcome: str, latency_s: float) -> None:
        """A delivery finished; ``latency_s`` from the event's creation."""
        self.deliveries_total.labels(_closed(outcome, DELIVERY_OUTCOMES)).inc()
        self.delivery_latency.observe(max(latency_s, 0.0))

    def outbox_depth(self, pending: int) -> None:
        """Deliveries pending in the outbox now."""
        self.outbox_depth_gauge.set(pending)

    def alert(self) -> None:
        """A dead-letter alert went out."""
        self.alerts_total.inc()
