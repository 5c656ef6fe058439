"""The event catalog, the payloads of the events the gateway emits, and their signing (pure).

Every payload is ``{type, event, id, timestamp, data}`` (docs.rymi.live/guide/webhooks.html:
``event`` repeats ``type``; ``timestamp`` is ISO 8601). ``id`` is chosen once, when the
event is written to the outbox, and is inside the signed body: it stays the same across
retries and replays, so receivers deduplicate on it (reliability.md 3.2 item 1). The body
is serialized once here and stored as bytes; every attempt signs and sends exactly those
bytes, never a re-serialization.

Signing (rymi-api.md 8.2): ``X-Rymi-Signature`` is the hex HMAC-SHA256 of
``"{timestamp}.{raw body}"`` under the endpoint's secret, ``X-Rymi-Timestamp`` is Unix
**milliseconds**, ``X-Rymi-Event`` the event type. Every attempt gets a fresh timestamp
and so a fresh signature (reliability.md 3.2 item 3): receivers reject timestamps older
than 5 minutes.

Rotation (reliability.md 3.2 item 2). The reference suggests a Stripe-style list
``v1=<hex>,v1=<hex>`` in one header, but the official SDK's ``verify_signature`` compares
the *whole* header value with one hex digest, so any list would fail every SDK receiver.
We therefore keep ``X-Rymi-Signature`` a single hex digest under the **current** secret
(what the SDK verifies) and, while a rotation window is open, add
``X-Rymi-Signature-Previous`` with the digest under the **previous** secret. A receiver
still configured with the old secret verifies that header instead (with the same SDK
call); once it has switched, it ignores it. ``X-Rymi-Webhook-Id`` repeats the event id
(also inside the signed body) for deduplication before parsing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.store.models import CallRecord, TranscriptLine

__all__ = [
    "CATALOG",
    "EMITTED",
    "EVENT_HEADER",
    "ID_HEADER",
    "PREVIOUS_SIGNATURE_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Event",
    "api_key_event",
    "balance_events",
    "call_completed",
    "delivery_headers",
    "iso_ms",
    "make_event",
    "number_assigned",
    "sign",
]

EMITTED = frozenset(
    {
        "call.completed",
        "agent.number_assigned",
        "system.api_key_created",
        "system.api_key_revoked",
        "billing.low_balance",
        "billing.balance_depleted",
    }
)
"""Events this gateway emits."""

CATALOG = EMITTED | {
    # rymi-api.md 8.1: the rest of the documented catalog is accepted at registration
    # (a subscription made today keeps working when the gateway starts emitting them).
    "call.intelligence.ready",
    "call.started",
    "call.failed",
    "agent.published",
    "agent.failed",
    "billing.topup_confirmed",
    "billing.payment_failed",
    "auth.welcome",
    "batch.completed",
    "custom.alert",
}
"""Every event name a webhook may subscribe to; anything else is refused."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event, serialized: what the outbox stores and every attempt sends."""

    id: str
    tenant_id: str
    type: str
    body: bytes
    created_at_ms: int


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds (``...T06:26:09.123Z``)."""
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(tenant_id: str, event_type: str, data: dict[str, Any], at_ms: int) -> Event:
    """Serialize one event with a fresh id (``evt_`` + 32 hex digits)."""
    if event_type not in EMITTED:
        raise ValueError(f"not an emitted event type: {event_type}")
    event_id = "evt_" + uuid.uuid4().hex
    envelope = {
        "type": event_type,
        "event": event_type,
        "id": event_id,
        "timestamp": iso_ms(at_ms),
        "data": data,
    }
    # Compact and UTF-8: the SDK verifier signs ``f"{ts}.{payload}"`` of the decoded text,
    # which is the same bytes as ours only when the body is UTF-8.
    body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    return Event(event_id, tenant_id, event_type, body, at_ms)


def _usd(micros: int | None) -> float | None:
    return None if micros is None else micros / 1_000_000


_SDK_STATUS = {"live": "in_progress"}  # the API's vocabulary (docs/api.md)


def call_completed(record: CallRecord, transcript: Sequence[TranscriptLine]) -> dict[str, Any]:
    """``data`` of ``call.completed``: the final record and its whole transcript.

    ``duration`` is answer to end in seconds (ms precision); ``billable_seconds`` is the
    30 s units billed; ``cost`` is USD.
    """
    ended = record.ended_at_ms
    duration = 0.0 if ended is None else max(0, ended - record.answered_at_ms) / 1000
    units = record.billable_units
    return {
        "call_id": record.id,
        "agent_id": record.agent_id,
        "number": record.number,
        "carrier": record.carrier,
        "direction": record.direction.value,
        "status": _SDK_STATUS.get(record.status.value, record.status.value),
        "end_reason": record.end_reason,
        "duration": duration,
        "billable_seconds": None if units is None else units * 30,
        "cost": _usd(record.cost_micros),
        "transcript": [
            {"speaker": line.speaker, "text": line.text, "timestamp": iso_ms(line.at_ms)}
            for line in transcript
        ],
        "started_at": iso_ms(record.answered_at_ms),
        "ended_at": iso_ms(ended),
    }


def number_assigned(number: str, agent_id: str, previous_agent_id: str | None) -> dict[str, Any]:
    """``data`` of ``agent.number_assigned``."""
    return {"number": number, "agent_id": agent_id, "previous_agent_id": previous_agent_id}


def api_key_event(key_id: str, key_prefix: str, kind: str, label: str | None) -> dict[str, Any]:
    """``data`` of ``system.api_key_created`` / ``system.api_key_revoked`` (no secret)."""
    return {"key_id": key_id, "key_prefix": key_prefix, "kind": kind, "label": label}


def balance_events(
    before_micros: int,
    after_micros: int,
    thresholds_micros: Sequence[int],
    call_id: str | None,
) -> list[tuple[str, dict[str, Any]]]:
    """The billing alerts a debit from ``before`` to ``after`` crosses, as (type, data).

    ``billing.low_balance`` for each threshold with ``after < threshold <= before``
    (thresholds are balance levels, docs/api.md "Alerts"), and
    ``billing.balance_depleted`` when the balance goes from above zero to zero or below.
    A balance that was already under a threshold does not alert again until it has been
    topped up above it.
    """
    events: list[tuple[str, dict[str, Any]]] = []
    if after_micros >= before_micros:
        return events
    for threshold in sorted(thresholds_micros, reverse=True):
        if after_micros < threshold <= before_micros:
            data = {
                "threshold_usd": _usd(threshold),
                "balance_usd": _usd(after_micros),
                "call_id": call_id,
            }
            events.append(("billing.low_balance", data))
    if before_micros > 0 >= after_micros:
        data = {"balance_usd": _usd(after_micros), "call_id": call_id}
        events.append(("billing.balance_depleted", data))
    return events


# -- signing ---------------------------------------------------------------------------

SIGNATURE_HEADER = "X-Rymi-Signature"
PREVIOUS_SIGNATURE_HEADER = "X-Rymi-Signature-Previous"
TIMESTAMP_HEADER = "X-Rymi-Timestamp"
EVENT_HEADER = "X-Rymi-Event"
ID_HEADER = "X-Rymi-Webhook-Id"


def sign(secret: str, timestamp_ms: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``b"{timestamp_ms}." + body`` keyed with ``secret`` (UTF-8)."""
    message = f"{timestamp_ms}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def delivery_headers(
    *,
    body: bytes,
    event_type: str,
    event_id: str,
    timestamp_ms: int,
    secret: str,
    previous_secret: str | None = None,
) -> dict[str, str]:
    """The headers of one attempt (signed now, under one or two secrets)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "rymi-gateway-webhooks/1",
        SIGNATURE_HEADER: sign(secret, timestamp_ms, body),
        TIMESTAMP_HEADER: str(timestamp_ms),
        EVENT_HEADER: event_type,
        ID_HEADER: event_id,
    }
    if previous_secret is not None:
        headers[PREVIOUS_SIGNATURE_HEADER] = sign(previous_secret, timestamp_ms, body)
    return headers
