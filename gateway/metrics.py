"""The gateway's Prometheus metrics, on an injected registry (see docs/operations.md).

:class:`GatewayMetrics` defines every metric once and offers one method per thing that
happens (``call_started``, ``refused``, ``frame_dropped``, ...). The call engine calls
those methods and never touches a metric object, so label values are checked in one
place: every label has a small *closed* set of values (carriers, end reasons, refusal
codes, ...), and a value outside it is recorded as ``other`` and logged once, so a bug
cannot grow the series count (a call id passed as a reason would otherwise create one
series per call, and Prometheus keeps every series it ever saw in the head block).

Conventions (https://prometheus.io/docs/practices/naming/): names in base units
(seconds, not milliseconds), ``_total`` on counters, no call ids, tenant ids or phone
numbers in the regular families. Per-tenant figures live in two separate families that
only carry the tenants an operator lists in ``RYMI_METRICS_TENANTS`` (everyone else is
``other``), so their size is bounded by that list (:class:`TenantLabels`).

Every labelled series of a closed set is created at zero up front, so ``rate()`` and
alert rules see a series before the first event (a missing series reads as "no data",
not 0).

Gauges carry a ``multiprocess_mode``: with several workers on one host (prometheus-client
multiprocess mode, :mod:`gateway.ops.registry`) ``livesum`` adds the live workers' values
and forgets a dead worker's; ``livemax`` reports the highest.
"""

from __future__ import annotations

import enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.bridge.link import LinkFailure
from gateway.bridge.protocol import ProtocolViolation
from gateway.call_events import EndReason
from gateway.carriers import NAMES as CARRIER_NAMES
from gateway.errors import CloseCode
from gateway.metering import Role
from gateway.metric_labels import OTHER, ClosedLabel, TenantLabels
from gateway.reasons import RefusalReason
from gateway.store.coordination.types import ClaimStatus, RenewStatus
from gateway.webhook_metrics import WebhookDeliveryMetrics

__all__ = [
    "ADDED_LATENCY_BUCKETS",
    "AGENT_CONNECT_BUCKETS",
    "ANSWER_BUCKETS",
    "LOOP_LAG_BUCKETS",
    "OTHER",
    "PACING_BUCKETS",
    "AnswerOutcome",
    "Direction",
    "DropReason",
    "GatewayMetrics",
    "LeaseOp",
    "TenantLabels",
]

PACING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
"""Outbound pacing lateness/jitter, seconds: 100 µs to 100 ms (one frame is 20 ms)."""

ADDED_LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.0025, 0.005, 0.01, 0.025, 0.05,
)  # fmt: skip
"""Gateway-added latency, seconds: 50 µs to 50 ms (decode + resample + queueing); 0.5 and
2 ms are the capacity goal's p50 and p99 (docs/performance.md), so the share within each
is exact."""

AGENT_CONNECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Agent connect time, seconds: a local agent takes ms, a remote TLS WebSocket 100s of ms."""

ANSWER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Answer time, seconds: a few ms of lookups and one write; the caller hears ringing
meanwhile, and a carrier gives up on an answer URL after seconds."""

LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Event-loop lag, seconds: above one 20 ms frame the caller can hear it."""


class Direction(enum.StrEnum):
    """Which way media flows, seen from the carrier."""

    IN = "in"
    """Carrier to agent (the caller speaking)."""
    OUT = "out"
    """Agent to carrier (the caller listening)."""


class AnswerOutcome(enum.StrEnum):
    """How the gateway answered a carrier's answer request."""

    ANSWERED = "answered"
    """The answer document, with the media socket's URL."""
    REFUSED = "refused"
    """The carrier's refusal document (busy or rejected, with a reason code)."""
    REJECTED = "rejected"
    """An HTTP error: not an answer request (400), a bad signature (403), draining (503)."""
    ERROR = "error"
    """The handler failed (aiohttp answers 500) or the request went away."""


class DropReason(enum.StrEnum):
    """Why a media frame was discarded before reaching its destination."""

    AGENT_SLOW = "agent_slow"
    """Caller audio held for a slow agent overflowed; the oldest frame went."""
    CONNECT_BACKLOG = "connect_backlog"
    """Caller audio held while the agent connects overflowed (oldest dropped)."""
    OUTBOUND_OVERFLOW = "outbound_overflow"
    """The pacer's queue toward the carrier was full (agent ignored flow control)."""
    CLEARED = "cleared"
    """Queued agent audio discarded by a barge-in clear (intended, counted apart)."""
    INVALID = "invalid"
    """A carrier or agent frame that did not decode (bad size, bad encoding)."""


class LeaseOp(enum.StrEnum):
    """Coordination operations on concurrency leases (reliability.md §1.3)."""

    ADMIT = "admit"
    RESERVE = "reserve"
    CLAIM = "claim"
    RENEW = "renew"
    RELEASE = "release"


_LEASE_OUTCOMES = frozenset(
    {"ok", "refused", "error", *(s.value for s in ClaimStatus), *(s.value for s in RenewStatus)}
)
_COORDINATION_OPS = frozenset({*(op.value for op in LeaseOp), "ping", "command", "rate_limit"})
_AGENT_ERRORS = frozenset(
    {
        *(r.value for r in LinkFailure),
        *(r.value for r in ProtocolViolation),
        "agent_error",
        "not_open",
        "misuse",
        "misconfigured",
    }
)


class GatewayMetrics:
    """Every metric of the gateway, registered on ``registry`` (never the global one).

    Args:
        registry: where the metrics are registered; a fresh one per test, the exposed
            one in production (see :func:`gateway.ops.registry.metrics_registries`).
        tenants: which tenants get their own per-tenant series (default: none).
    """

    def __init__(self, registry: CollectorRegistry, *, tenants: TenantLabels | None = None) -> None:
        self.registry = registry
        self.tenants = tenants or TenantLabels()
        self._carrier = ClosedLabel.of("carrier", CARRIER_NAMES)
        self._outcome = ClosedLabel.of("outcome", EndReason)
        self._answer_outcome = ClosedLabel.of("outcome", AnswerOutcome)
        self._refusal = ClosedLabel.of("reason", RefusalReason)
        self._direction = ClosedLabel.of("direction", Direction)
        self._drop = ClosedLabel.of("reason", DropReason)
        self._agent_error = ClosedLabel.of("reason", _AGENT_ERRORS)
        self._role = ClosedLabel.of("role", Role)
        self._op = ClosedLabel.of("op", LeaseOp)
        self._lease_outcome = ClosedLabel.of("outcome", _LEASE_OUTCOMES)
        self._coord_op = ClosedLabel.of("op", _COORDINATION_OPS)
        self._close_code = ClosedLabel.of("close_code", (str(int(c)) for c in CloseCode))
        self._define_calls(registry)
        self._define_media(registry)
        self._define_agent_and_billing(registry)
        self._define_coordination_and_process(registry)
        self._define_checkpoints(registry)
        self._define_tenants(registry)
        self.webhooks = WebhookDeliveryMetrics(registry)
        self._zero_series()

    # -- definitions ------------------------------------------------------------------

    def _define_calls(self, r: CollectorRegistry) -> None:
        self.calls_active = Gauge(
            "gateway_calls_active",
            "Calls whose media stream is live on this instance.",
            ["carrier"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.calls_total = Counter(
            "gateway_calls_total",
            "Calls that ended, by carrier and end reason (outcome).",
            ["carrier", "outcome"],
            registry=r,
        )
        self.answer_seconds = Histogram(
            "gateway_answer_seconds",
            "Time to answer a carrier's answer request, by carrier and outcome.",
            ["carrier", "outcome"],
            registry=r,
            buckets=ANSWER_BUCKETS,
        )
        self.refusals_total = Counter(
            "gateway_call_refusals_total",
            "Calls refused at answer or media start, by stable reason code.",
            ["reason"],
            registry=r,
        )
        self.ws_rejected_total = Counter(
            "gateway_websocket_rejections_total",
            "Carrier WebSocket connections or messages rejected, by the close code sent.",
            ["close_code"],
            registry=r,
        )

    def _define_media(self, r: CollectorRegistry) -> None:
        self.frames_total = Counter(
            "gateway_frames_total",
            "20 ms media frames passed through, by carrier and direction (in = from carrier).",
            ["carrier", "direction"],
            registry=r,
        )
        self.frames_dropped_total = Counter(
            "gateway_frames_dropped_total",
            "Media frames discarded, by reason.",
            ["reason"],
            registry=r,
        )
        self.pacing_lateness = Histogram(
            "gateway_pacing_lateness_seconds",
            "How late each outbound frame left after its due time.",
            registry=r,
            buckets=PACING_BUCKETS,
        )
        self.pacing_jitter = Histogram(
            "gateway_pacing_jitter_seconds",
            "Deviation of each outbound frame interval from the 20 ms frame period.",
            registry=r,
            buckets=PACING_BUCKETS,
        )
        self.added_latency = Histogram(
            "gateway_added_latency_seconds",
            "Time a frame spent in the gateway (in: carrier to agent, out: agent to carrier).",
            ["direction"],
            registry=r,
            buckets=ADDED_LATENCY_BUCKETS,
        )

    def _define_agent_and_billing(self, r: CollectorRegistry) -> None:
        self.agent_connect = Histogram(
            "gateway_agent_connect_seconds",
            "Time to open an agent link (WebSocket handshake + start), successful ones.",
            registry=r,
            buckets=AGENT_CONNECT_BUCKETS,
        )
        self.agent_errors_total = Counter(
            "gateway_agent_errors_total",
            "Agent link failures and protocol violations, by reason.",
            ["reason"],
            registry=r,
        )
        self.billable_seconds_total = Counter(
            "gateway_billable_seconds_total",
            "Billable audio of finished calls (first audio to end), by agent role.",
            ["role"],
            registry=r,
        )
        self.billed_units_total = Counter(
            "gateway_billed_units_total",
            "30 s billing units charged for finished calls, by agent role.",
            ["role"],
            registry=r,
        )

    def _define_coordination_and_process(self, r: CollectorRegistry) -> None:
        self.lease_operations_total = Counter(
            "gateway_lease_operations_total",
            "Concurrency-lease operations, by operation and outcome.",
            ["op", "outcome"],
            registry=r,
        )
        self.coordination_errors_total = Counter(
            "gateway_coordination_errors_total",
            "Coordination backend (Redis) failures, by operation.",
            ["op"],
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "gateway_event_loop_lag_seconds",
            "How late the event loop woke a timer (a blocked loop delays every call).",
            registry=r,
            buckets=LOOP_LAG_BUCKETS,
        )
        self.gc_pause = Histogram(
            "gateway_gc_pause_seconds",
            "How long each garbage collection stopped the process, by generation.",
            ["generation"],
            registry=r,
            buckets=LOOP_LAG_BUCKETS,
        )
        self.draining = Gauge(
            "gateway_draining",
            "1 while this instance drains (no new calls admitted), else 0.",
            registry=r,
            multiprocess_mode="livemax",
        )

    def _define_checkpoints(self, r: CollectorRegistry) -> None:
        help_flush = "Time to write one batch of live calls' usage checkpoints (one transaction)."
        self.checkpoint_flush = Histogram(
            "gateway_checkpoint_flush_seconds", help_flush, registry=r, buckets=LOOP_LAG_BUCKETS
        )
        self.checkpoints_written_total = Counter(
            "gateway_checkpoints_written_total",
            "Usage checkpoints written to the database (one per call per flush).",
            registry=r,
        )
        self.checkpoint_failures_total = Counter(
            "gateway_checkpoint_flush_failures_total",
            "Checkpoint batches that failed to write (their checkpoints are retried).",
            registry=r,
        )

    def _define_tenants(self, r: CollectorRegistry) -> None:
        self.tenant_calls_active = Gauge(
            "gateway_tenant_calls_active",
            "Live calls of the tenants listed in RYMI_METRICS_TENANTS (others: other).",
            ["tenant"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.tenant_billable_seconds_total = Counter(
            "gateway_tenant_billable_seconds_total",
            "Billable seconds of the tenants listed in RYMI_METRICS_TENANTS (others: other).",
            ["tenant"],
            registry=r,
        )

    def _zero_series(self) -> None:
        for carrier in sorted(self._carrier.values - {OTHER}):
            self.calls_active.labels(carrier)
            for direction in Direction:
                self.frames_total.labels(carrier, direction.value)
            for outcome in EndReason:
                self.calls_total.labels(carrier, outcome.value)
            for answer in AnswerOutcome:
                self.answer_seconds.labels(carrier, answer.value)
        for direction in Direction:
            self.added_latency.labels(direction.value)
        for reason in RefusalReason:
            self.refusals_total.labels(reason.value)
        for drop in DropReason:
            self.frames_dropped_total.labels(drop.value)
        for role in Role:
            self.billable_seconds_total.labels(role.value)
            self.billed_units_total.labels(role.value)
        for code in (
            CloseCode.POLICY_VIOLATION,
            CloseCode.MESSAGE_TOO_BIG,
            CloseCode.START_TIMEOUT,
        ):
            self.ws_rejected_total.labels(str(int(code)))
        for op in _COORDINATION_OPS:
            self.coordination_errors_total.labels(op)
        self.draining.set(0)
        if self.tenants.enabled:
            for tenant in (*self.tenants.tenants, OTHER):
                self.tenant_calls_active.labels(tenant)
                self.tenant_billable_seconds_total.labels(tenant)

    # -- calls ------------------------------------------------------------------------

    def call_started(self, carrier: str, tenant_id: str | None = None) -> None:
        """A media stream started (the call is live here)."""
        self.calls_active.labels(self._carrier(carrier)).inc()
        if tenant_id is not None and self.tenants.enabled:
            self.tenant_calls_active.labels(self.tenants.label(tenant_id)).inc()

    def call_ended(self, carrier: str, outcome: str, tenant_id: str | None = None) -> None:
        """A live call ended with end reason ``outcome`` (pair of :meth:`call_started`)."""
        carrier_label = self._carrier(carrier)
        self.calls_active.labels(carrier_label).dec()
        self.calls_total.labels(carrier_label, self._outcome(outcome)).inc()
        if tenant_id is not None and self.tenants.enabled:
            self.tenant_calls_active.labels(self.tenants.label(tenant_id)).dec()

    def answered(self, carrier: str, outcome: str, seconds: float) -> None:
        """A carrier's answer request was answered with ``outcome`` after ``seconds``."""
        labels = self.answer_seconds.labels(self._carrier(carrier), self._answer_outcome(outcome))
        labels.observe(max(0.0, seconds))

    def refused(self, reason: str) -> None:
        """A call was refused (at answer or media start) with a stable reason code."""
        self.refusals_total.labels(self._refusal(reason)).inc()

    def websocket_rejected(self, close_code: int) -> None:
        """A carrier WebSocket (or one of its messages) was rejected with ``close_code``."""
        self.ws_rejected_total.labels(self._close_code(int(close_code))).inc()

    # -- media ------------------------------------------------------------------------

    def frames(self, carrier: str, direction: str, count: int = 1) -> None:
        """``count`` frames passed in ``direction`` (``in``: from the carrier)."""
        if count > 0:
            self.frames_total.labels(self._carrier(carrier), self._direction(direction)).inc(count)

    def frame_dropped(self, reason: str, count: int = 1) -> None:
        """``count`` frames were discarded for ``reason`` (a :class:`DropReason`)."""
        if count > 0:
            self.frames_dropped_total.labels(self._drop(reason)).inc(count)

    def observe_pacing(self, lateness_s: float, jitter_s: float | None = None) -> None:
        """One outbound frame left ``lateness_s`` after its due time.

        Args:
            lateness_s: send time minus due time, seconds (negative is recorded as 0).
            jitter_s: |interval since the previous frame - 20 ms|, seconds, when known.
        """
        self.pacing_lateness.observe(max(0.0, lateness_s))
        if jitter_s is not None:
            self.pacing_jitter.observe(abs(jitter_s))

    def observe_added_latency(self, direction: str, seconds: float) -> None:
        """A frame spent ``seconds`` inside the gateway going ``direction``."""
        self.added_latency.labels(self._direction(direction)).observe(max(0.0, seconds))

    # -- agent and billing --------------------------------------------------------------

    def agent_connected(self, seconds: float) -> None:
        """An agent link opened after ``seconds``."""
        self.agent_connect.observe(max(0.0, seconds))

    def agent_error(self, reason: str) -> None:
        """An agent link failed (``AgentError.reason``)."""
        self.agent_errors_total.labels(self._agent_error(reason)).inc()

    def billed(
        self, role: str, billable_s: float, units: int, tenant_id: str | None = None
    ) -> None:
        """A call's final usage: ``billable_s`` seconds of audio in ``units`` 30 s units."""
        role_label = self._role(role)
        self.billable_seconds_total.labels(role_label).inc(max(0.0, billable_s))
        self.billed_units_total.labels(role_label).inc(max(0, units))
        if tenant_id is not None and self.tenants.enabled:
            label = self.tenants.label(tenant_id)
            self.tenant_billable_seconds_total.labels(label).inc(max(0.0, billable_s))

    # -- coordination and process -------------------------------------------------------

    def lease_operation(self, op: str, outcome: str) -> None:
        """A lease operation (:class:`LeaseOp`) finished with ``outcome`` (a status value,
        ``ok``, ``refused`` or ``error``)."""
        self.lease_operations_total.labels(self._op(op), self._lease_outcome(outcome)).inc()

    def coordination_error(self, op: str) -> None:
        """The coordination backend failed during ``op``."""
        self.coordination_errors_total.labels(self._coord_op(op)).inc()

    def observe_loop_lag(self, seconds: float) -> None:
        """The event loop woke a timer ``seconds`` late."""
        self.event_loop_lag.observe(max(0.0, seconds))

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        """A garbage collection of ``generation`` (0-2) stopped the process ``seconds``."""
        self.gc_pause.labels(str(min(max(generation, 0), 2))).observe(max(0.0, seconds))

    def checkpoints_flushed(self, count: int, seconds: float) -> None:
        """A batch of ``count`` checkpoints was written in ``seconds``."""
        self.checkpoint_flush.observe(max(0.0, seconds))
        self.checkpoints_written_total.inc(max(0, count))

    def checkpoint_flush_failed(self) -> None:
        """A batch of checkpoints failed to write (it will be retried)."""
        self.checkpoint_failures_total.inc()

    def set_draining(self, draining: bool) -> None:
        """Record whether this instance is draining."""
        self.draining.set(1 if draining else 0)
