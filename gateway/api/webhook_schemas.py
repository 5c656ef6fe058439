"""Request and response shapes of ``/v1/webhooks`` (msgspec structs; OpenAPI from them).

Kept beside :mod:`gateway.api.schemas` (same conventions) so the webhook routes can grow
without crowding that module. Shapes follow the official SDK (rymi-api.md 8.1): list
``{webhooks, total, offset, limit}``, create ``{status:"registered", ...}``, update
``{status:"updated", id}``, delete ``{status:"deleted", id}``; the secret is never returned.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from gateway.api.schemas import Limit, Offset, Timestamp

__all__ = [
    "AttemptOut",
    "DeliveriesQuery",
    "DeliveryList",
    "DeliveryOut",
    "ReplayQueued",
    "WebhookCreate",
    "WebhookDeleted",
    "WebhookList",
    "WebhookOut",
    "WebhookRegistered",
    "WebhookUpdate",
    "WebhookUpdated",
]

Url = Annotated[
    str,
    Meta(
        max_length=2048,
        description="https:// URL (http:// only for loopback in development mode); "
        "in production it must resolve to public addresses only.",
    ),
]
EventName = Annotated[str, Meta(max_length=64, description="A catalog name, e.g. call.completed")]
Events = Annotated[list[EventName], Meta(min_length=1, max_length=50)]
WebhookSecret = Annotated[
    str, Meta(min_length=16, max_length=256, description="HMAC secret (16-256 characters)")
]
Email = Annotated[str, Meta(max_length=254, description="Notified when deliveries dead-letter")]
DeliveryStatus = Literal["pending", "delivered", "dead"]


class WebhookCreate(Struct):
    """``POST /v1/webhooks``."""

    url: Url
    events: Events
    secret: WebhookSecret
    alert_email: Email | None = None


class WebhookUpdate(Struct):
    """``PATCH /v1/webhooks/{webhook_id}``; a new ``secret`` rotates the old one out."""

    url: Url | None = None
    events: Events | None = None
    secret: WebhookSecret | None = None
    alert_email: Email | None = None


class WebhookOut(Struct):
    """A registered webhook (never its secret)."""

    id: str
    url: str
    events: list[str]
    alert_email: str | None
    created_at: Timestamp
    updated_at: Timestamp
    rotating_until: Timestamp | None
    """While set, deliveries also carry ``X-Rymi-Signature-Previous`` (the old secret)."""


class WebhookList(Struct):
    """``GET /v1/webhooks``."""

    webhooks: list[WebhookOut]
    total: int
    offset: int
    limit: int


class WebhookRegistered(Struct):
    """``POST /v1/webhooks`` succeeded."""

    status: Literal["registered"]
    id: str
    url: str
    events: list[str]
    alert_email: str | None
    created_at: Timestamp


class WebhookUpdated(Struct):
    """``PATCH /v1/webhooks/{webhook_id}`` succeeded."""

    status: Literal["updated"]
    id: str


class WebhookDeleted(Struct):
    """``DELETE /v1/webhooks/{webhook_id}`` succeeded."""

    status: Literal["deleted"]
    id: str


class AttemptOut(Struct):
    """One delivery attempt."""

    attempt: int
    started_at: Timestamp
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None


class DeliveryOut(Struct):
    """One event to this webhook, with its attempts."""

    id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: list[AttemptOut]
    next_attempt_at: Timestamp | None
    replay_of: str | None
    created_at: Timestamp
    finished_at: Timestamp | None


class DeliveryList(Struct):
    """``GET /v1/webhooks/{webhook_id}/deliveries``."""

    deliveries: list[DeliveryOut]
    total: int
    offset: int
    limit: int


class DeliveriesQuery(Struct):
    """Query of the delivery list."""

    limit: Limit = 50
    offset: Offset = 0
    status: DeliveryStatus | None = None


class ReplayQueued(Struct):
    """The event is queued again to the webhook, as a new delivery."""

    status: Literal["queued"]
    id: str
    replay_of: str
    event_id: str
