"""``/inbound/{provider}``: answer a carrier's call, or refuse it.

Order (reliability.md 1.3, 5.1), nothing written before the signature is verified:

1. parse the request (400 if it is not the carrier's answer request at all);
2. called number → tenant and agent (unknown number: refusal document, reason
   ``number_not_found``; we cannot check a signature without a tenant, and we write
   nothing, so refusing unverified is harmless);
3. the tenant's stored credential for this carrier verifies the signature → **403** and
   nothing written on failure;
4. agent published, balance > 0, then a concurrency slot *reserved* (short TTL);
5. the call row (``open_call``) and a single-use media token; the answer document points
   the stream at ``wss://<public base>/media/<provider>/<token>``.

Every refusal is the carrier's refusal document (busy for the concurrency limit,
rejected otherwise) with the stable reason code in a log line and in the
``X-Rymi-Refusal`` response header, never a 500.

The call id is derived from the carrier's call id (UUID v5), so a carrier retrying its
webhook gets the same reservation and the same call row instead of a second slot.
"""

from __future__ import annotations

import logging
import time
import uuid

from aiohttp import web

from gateway import carriers
from gateway.bridge import protocol as proto
from gateway.carriers import (
    CarrierAdapter,
    Headers,
    HttpRequest,
    InboundCall,
    StreamStarted,
    public_url,
)
from gateway.errors import CarrierProtocolError, NotFoundError, SignatureError, ValidationError
from gateway.log import bind_call, register_secret
from gateway.metrics import AnswerOutcome, LeaseOp
from gateway.reasons import RefusalReason
from gateway.server.context import ENGINE, Engine
from gateway.store.models import (
    CallRecord,
    CallStart,
    CarrierCredentials,
    NumberRoute,
    PlivoCredentials,
    TwilioCredentials,
    VonageCredentials,
)

__all__ = [
    "CALL_ID_NAMESPACE",
    "LEASE_PARAMETER",
    "REFUSAL_HEADER",
    "agent_start",
    "call_id_for",
    "inbound",
    "signing_credential",
]

log = logging.getLogger("gateway.answer")

CALL_ID_NAMESPACE = uuid.UUID("6b1d7f2e-43a8-5c0e-9a51-7e2f3c4d5b60")
"""UUID v5 namespace of our call ids (RFC 9562 §5.5)."""
LEASE_PARAMETER = "lt"
"""Stream parameter carrying the reservation's fencing token to the media socket."""
REFUSAL_HEADER = "X-Rymi-Refusal"
"""Carries a refusal's reason code on the carrier's refusal document."""
FROM_PARAMETER = "from"
"""Stream parameter carrying the caller's number (digits only: Plivo allows [A-Za-z0-9])."""


def call_id_for(carrier: str, carrier_call_id: str) -> str:
    """Our call id for a carrier's call: stable across webhook retries."""
    return str(uuid.uuid5(CALL_ID_NAMESPACE, f"{carrier}:{carrier_call_id}"))


def signing_credential(creds: CarrierCredentials) -> str | None:
    """The secret the carrier signs webhooks and upgrades with (None: not configured)."""
    secret = None
    if isinstance(creds, TwilioCredentials | PlivoCredentials):
        secret = creds.auth_token.reveal()
    elif isinstance(creds, VonageCredentials) and creds.signature_secret is not None:
        secret = creds.signature_secret.reveal()
    if secret is not None:
        register_secret(secret)  # the log safety net never prints it (a set lookup once known)
    return secret


def _number(raw: str) -> str:
    # Vonage sends E.164 without the "+" (e.g. 447700900000).
    return raw if raw.startswith("+") else "+" + raw


def _refuse(
    engine: Engine, adapter: CarrierAdapter, reason: RefusalReason, call: InboundCall | None
) -> web.Response:
    engine.metrics.refused(reason.value)
    log.info(
        "refused %s call %s: %s",
        adapter.name,
        call.call_id if call is not None else "-",
        reason.value,
    )
    kind = "busy" if reason is RefusalReason.QUOTA_CONCURRENT_CALLS else "rejected"
    document = adapter.refusal_document(kind)
    return web.Response(
        body=document.body,
        headers={"Content-Type": document.content_type, REFUSAL_HEADER: reason.value},
    )


async def inbound(request: web.Request) -> web.Response:
    """Handle ``GET|POST /inbound/{provider}``, timed into ``gateway_answer_seconds``."""
    engine = request.app[ENGINE]
    try:
        adapter = carriers.get(request.match_info["provider"])
    except LookupError:
        raise web.HTTPNotFound(text="unknown carrier\n") from None
    started = time.monotonic()
    outcome = AnswerOutcome.ERROR
    try:
        response = await _inbound(engine, adapter, request)
        refused = REFUSAL_HEADER in response.headers
        outcome = AnswerOutcome.REFUSED if refused else AnswerOutcome.ANSWERED
        return response
    except web.HTTPException:
        outcome = AnswerOutcome.REJECTED
        raise
    finally:
        engine.metrics.answered(adapter.name, outcome, time.monotonic() - started)


async def _inbound(engine: Engine, adapter: CarrierAdapter, request: web.Request) -> web.Response:
    body = await request.read()
    http_request = HttpRequest(
        request.method,
        public_url(engine.settings.base_url, request.path_qs),
        Headers(request.headers.items()),
        body,
    )
    try:
        call = adapter.parse_answer(http_request)
    except CarrierProtocolError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    if engine.draining:
        # reliability.md 5.5: a draining instance sends calls elsewhere (the carrier's
        # fallback URL) instead of binding them here.
        raise web.HTTPServiceUnavailable(text="draining\n")
    return await _answer(engine, adapter, http_request, call)


async def _answer(
    engine: Engine, adapter: CarrierAdapter, request: HttpRequest, call: InboundCall
) -> web.Response:
    # Imported here: gateway.server.outbound builds on this module's helpers.
    from gateway.server.outbound import answer_outbound, outbound_call_id

    if (outbound_id := outbound_call_id(request)) is not None:
        # Our own outbound call (POST /v1/calls) was answered: the called number is the
        # callee's, so the call is found by the id in its answer URL instead.
        return await answer_outbound(engine, adapter, request, call, outbound_id)
    directory, ledger = engine.state.directory, engine.state.ledger
    try:
        route = await directory.resolve_number(_number(call.to_number))
    except (NotFoundError, ValidationError):
        return _refuse(engine, adapter, RefusalReason.NUMBER_NOT_FOUND, call)
    tenant = route.tenant
    try:
        creds = await directory.carrier_credentials(tenant.id)
    except NotFoundError:
        creds = None
    credential = None if creds is None else signing_credential(creds)
    if creds is None or creds.carrier != adapter.name or credential is None:
        return _refuse(engine, adapter, RefusalReason.CARRIER_NOT_CONNECTED, call)
    try:
        adapter.verify_request(request, credential, now=engine.wall_clock(), nonces=engine.nonces)
        if call.account_id is not None and call.account_id != creds.account_id:
            raise SignatureError("AccountSid is not the tenant's account")
    except SignatureError as exc:
        log.warning("%s answer for %s: bad signature (%s)", adapter.name, tenant.id, exc)
        raise web.HTTPForbidden(text="signature check failed\n") from None
    agent = route.agent
    if agent is None or not agent.published:
        return _refuse(engine, adapter, RefusalReason.AGENT_NOT_PUBLISHED, call)
    if await ledger.balance_micros(tenant.id) <= 0:
        return _refuse(engine, adapter, RefusalReason.BALANCE_DEPLETED, call)
    call_id = call_id_for(adapter.name, call.call_id)
    with bind_call(call_id, tenant.id):
        return await _admit(engine, adapter, call, call_id, route)


async def _admit(
    engine: Engine, adapter: CarrierAdapter, call: InboundCall, call_id: str, route: NumberRoute
) -> web.Response:
    """Reserve a slot, open the call row and answer with the media URL."""
    tenant, agent = route.tenant, route.agent
    assert agent is not None
    admission = await engine.coordination.admit(
        tenant.id,
        call_id,
        limit=tenant.max_concurrent_calls,
        ttl=engine.settings.reservation_ttl_s,
    )
    _meter_admission(engine, admission.reason)
    if admission.lease is None:
        assert admission.reason is not None
        return _refuse(engine, adapter, admission.reason, call)
    lease = admission.lease
    now = engine.wall_clock()
    start = CallStart(
        call_id=call_id,
        tenant_id=tenant.id,
        agent_id=agent.id,
        number=route.number,
        carrier=adapter.name,
        role=agent.role,
        max_call_duration_s=agent.max_call_duration_s,
        answered_at_ms=round(now * 1000),
        carrier_call_id=call.call_id,
    )
    try:
        await engine.state.ledger.open_call(start)
    except BaseException:
        await engine.coordination.release(tenant.id, call_id, lease.token)
        raise
    token = engine.tokens.issue(
        provider=adapter.name, call_id=call_id, tenant_id=tenant.id, now=now
    )
    parameters = {LEASE_PARAMETER: str(lease.token)}
    caller = "".join(ch for ch in call.from_number if ch.isalnum())
    if caller:
        parameters[FROM_PARAMETER] = caller[:32]
    if adapter.name == "vonage":
        # Vonage's websocket:connected carries only our headers: the call uuid must be one.
        parameters["call_uuid"] = call.call_id
    document = adapter.answer_document(media_url(engine, adapter.name, token), parameters)
    log.info(
        "answered %s call %s as %s (tenant %s)", adapter.name, call.call_id, call_id, tenant.id
    )
    return web.Response(body=document.body, headers={"Content-Type": document.content_type})


def _meter_admission(engine: Engine, reason: RefusalReason | None) -> None:
    metrics = engine.metrics
    if reason is None:
        metrics.lease_operation(LeaseOp.ADMIT, "ok")
    elif reason is RefusalReason.COORDINATION_UNAVAILABLE:
        # Coordination.admit fails closed and turns the outage into this refusal.
        metrics.lease_operation(LeaseOp.ADMIT, "error")
        metrics.coordination_error(LeaseOp.ADMIT)
    else:
        metrics.lease_operation(LeaseOp.ADMIT, "refused")


def media_url(engine: Engine, provider: str, token: str) -> str:
    """``ws(s)://<public base>/media/<provider>/<token>``."""
    base = engine.settings.base_url
    scheme, _, rest = base.partition("://")
    ws_scheme = "wss" if scheme == "https" else "ws"
    return public_url(f"{ws_scheme}://{rest}", f"/media/{provider}/{token}")


def agent_start(record: CallRecord, started: StreamStarted, agent_id: str) -> proto.Start:
    """The agent's ``start`` for a call, from its record and the carrier's ``start``.

    The stream parameters this module put in the answer document come back here: the
    lease token (``lt``) and Vonage's ``call_uuid`` are ours and are not passed on; the
    caller's digits (``from``) become ``from`` (E.164 with ``+`` when they are digits).
    Other custom parameters go to the agent, capped at 32 names of 64 characters and
    values of 1 024.
    """
    hidden = (LEASE_PARAMETER, FROM_PARAMETER, "call_uuid")
    params = {k: v for k, v in started.custom_parameters.items() if k not in hidden}
    digits = started.custom_parameters.get(FROM_PARAMETER, "")
    return proto.Start(
        call_id=record.id,
        tenant_id=record.tenant_id,
        agent_id=agent_id,
        from_=f"+{digits}" if digits.isdigit() else digits or "unknown",
        to=record.number,
        carrier=record.carrier,
        carrier_call_id=record.carrier_call_id,
        direction=record.direction.value,
        max_duration_s=record.max_call_duration_s,
        parameters={k[:64]: v[:1024] for k, v in list(params.items())[:32]},
    )
