"""``/v1/webhooks``: register, list, update (rotate the secret), delete; deliveries, replay.

rymi-api.md 8.1 and docs/webhooks.md. Every check runs before anything is stored, so a
400 leaves no row behind: the URL rules (:func:`gateway.webhooks.urls.check_url`, which
resolves the host in production mode), the event catalog, the secret length (16-256) and
the alert e-mail. Another tenant's webhook or delivery is a 404, never a 403.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.auth import SETTINGS
from gateway.api.http import DIRECTORY, TENANT, iso_ms, json_response, read_json, read_query
from gateway.api.routes import Route
from gateway.api.schemas import PageQuery
from gateway.api.webhook_schemas import (
    AttemptOut,
    DeliveriesQuery,
    DeliveryList,
    DeliveryOut,
    ReplayQueued,
    WebhookCreate,
    WebhookDeleted,
    WebhookList,
    WebhookOut,
    WebhookRegistered,
    WebhookUpdate,
    WebhookUpdated,
)
from gateway.webhooks.endpoints import (
    Delivery,
    Endpoint,
    WebhookStore,
    validate_email,
    validate_events,
    validate_secret,
)
from gateway.webhooks.urls import check_url

__all__ = ["ROUTES"]


def _store(request: web.Request) -> WebhookStore:
    # The outbox lives in the directory's (= the ledger's) database, sealed by its keyring.
    directory = request.app[DIRECTORY]
    return WebhookStore(directory.engine, directory.keyring, directory.clock)


def _out(endpoint: Endpoint) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events),
        alert_email=endpoint.alert_email,
        created_at=iso_ms(endpoint.created_at_ms) or "",
        updated_at=iso_ms(endpoint.updated_at_ms) or "",
        rotating_until=iso_ms(endpoint.rotating_until_ms),
    )


def _delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,  # type: ignore[arg-type]
        attempts=[
            AttemptOut(
                attempt=a.attempt,
                started_at=iso_ms(a.started_at_ms) or "",
                duration_ms=a.duration_ms,
                status_code=a.status_code,
                outcome=a.outcome,
                error=a.error,
            )
            for a in delivery.attempts
        ],
        next_attempt_at=iso_ms(delivery.next_attempt_at_ms),
        replay_of=delivery.replay_of,
        created_at=iso_ms(delivery.created_at_ms) or "",
        finished_at=iso_ms(delivery.finished_at_ms),
    )


async def create_webhook(request: web.Request) -> web.Response:
    """Register a webhook endpoint."""
    body = await read_json(request, WebhookCreate)
    validate_events(body.events)
    validate_secret(body.secret)
    validate_email(body.alert_email)
    url = await check_url(body.url, dev_mode=request.app[SETTINGS].webhook_dev_mode)
    endpoint = await _store(request).create(
        request[TENANT], url, body.events, body.secret, body.alert_email
    )
    result = WebhookRegistered(
        status="registered",
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events),
        alert_email=endpoint.alert_email,
        created_at=iso_ms(endpoint.created_at_ms) or "",
    )
    return json_response(result, status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    """The tenant's webhooks (secrets never included)."""
    page = read_query(request, PageQuery)
    endpoints, total = await _store(request).list_endpoints(
        request[TENANT], page.limit, page.offset
    )
    return json_response(WebhookList([_out(e) for e in endpoints], total, page.offset, page.limit))


async def get_webhook(request: web.Request) -> web.Response:
    """One webhook."""
    endpoint = await _store(request).get(request[TENANT], request.match_info["webhook_id"])
    return json_response(_out(endpoint))


async def update_webhook(request: web.Request) -> web.Response:
    """Change a webhook; a new secret rotates (the old one signs for the rotation window)."""
    webhook_id = request.match_info["webhook_id"]
    body = await read_json(request, WebhookUpdate)
    settings = request.app[SETTINGS]
    store = _store(request)
    await store.get(request[TENANT], webhook_id)  # 404 before any other check
    if body.events is not None:
        validate_events(body.events)
    if body.secret is not None:
        validate_secret(body.secret)
    validate_email(body.alert_email)
    url = None
    if body.url is not None:
        url = await check_url(body.url, dev_mode=settings.webhook_dev_mode)
    await store.update(
        request[TENANT],
        webhook_id,
        rotation_window_ms=settings.webhook_rotation_window_s * 1000,
        url=url,
        events=body.events,
        secret=body.secret,
        alert_email=body.alert_email,
    )
    return json_response(WebhookUpdated("updated", webhook_id))


async def delete_webhook(request: web.Request) -> web.Response:
    """Delete a webhook (its pending deliveries are dropped)."""
    webhook_id = request.match_info["webhook_id"]
    await _store(request).delete(request[TENANT], webhook_id)
    return json_response(WebhookDeleted("deleted", webhook_id))


async def list_deliveries(request: web.Request) -> web.Response:
    """The webhook's deliveries, newest first, with every attempt."""
    query = read_query(request, DeliveriesQuery)
    deliveries, total = await _store(request).deliveries(
        request[TENANT],
        request.match_info["webhook_id"],
        limit=query.limit,
        offset=query.offset,
        status=query.status,
    )
    items = [_delivery_out(d) for d in deliveries]
    return json_response(DeliveryList(items, total, query.offset, query.limit))


async def replay_delivery(request: web.Request) -> web.Response:
    """Queue a finished (delivered or dead) delivery's event again, same event id."""
    delivery_id = request.match_info["delivery_id"]
    new_id, event_id = await _store(request).replay(
        request[TENANT], request.match_info["webhook_id"], delivery_id
    )
    return json_response(ReplayQueued("queued", new_id, delivery_id, event_id), status=202)


_ONE = "/webhooks/{webhook_id}"
ROUTES = [
    Route(
        "POST",
        "/webhooks",
        create_webhook,
        "Register a webhook",
        "webhooks",
        body=WebhookCreate,
        responses={201: WebhookRegistered},
    ),
    Route(
        "GET",
        "/webhooks",
        list_webhooks,
        "List webhooks",
        "webhooks",
        query=PageQuery,
        responses={200: WebhookList},
    ),
    Route("GET", _ONE, get_webhook, "A webhook", "webhooks", responses={200: WebhookOut}),
    Route(
        "PATCH",
        _ONE,
        update_webhook,
        "Update a webhook (a new secret rotates it)",
        "webhooks",
        body=WebhookUpdate,
        responses={200: WebhookUpdated},
    ),
    Route(
        "DELETE",
        _ONE,
        delete_webhook,
        "Delete a webhook",
        "webhooks",
        responses={200: WebhookDeleted},
    ),
    Route(
        "GET",
        f"{_ONE}/deliveries",
        list_deliveries,
        "A webhook's deliveries and their attempts",
        "webhooks",
        query=DeliveriesQuery,
        responses={200: DeliveryList},
    ),
    Route(
        "POST",
        f"{_ONE}/deliveries/{{delivery_id}}/replay",
        replay_delivery,
        "Replay a delivered or dead-lettered delivery",
        "webhooks",
        responses={202: ReplayQueued},
        errors=(409,),
    ),
]
