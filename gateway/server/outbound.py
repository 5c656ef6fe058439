"""Answering our own outbound calls: the callee of a ``POST /v1/calls`` picked up.

The API placed the call with an answer URL of its own
(``/inbound/<provider>?rymi_call=<call id>``, see :mod:`gateway.api.dialing`), so the
answer request names the call; the called number (the callee's) resolves nothing here.
Order, as for inbound calls nothing is written before the signature is verified:

1. the call row: ours, outbound, on this carrier (else 404: no such call here);
2. the signature with the call's tenant's credential (**403** on failure), and the
   carrier's own identification of the call (Twilio's ``CallSid`` / Plivo's
   ``RequestUUID`` must be the id the carrier's create response gave us, when we have
   it yet) and direction (``outbound-api`` / ``outbound``);
3. the slot reserved when the call was dialed: :meth:`Coordination.admit` with the same
   call id returns that reservation (a retry of this request gets it again); if it has
   expired the call is admitted afresh under the same rules or refused;
4. the row goes ``queued`` → ``live`` under the answer's carrier call id (what the media
   ``start`` will carry), and the answer document points the stream at the media URL,
   exactly as for an inbound call; from there the call is like any other.

Agent publication and balance are not checked again: they were when the call was
placed, and the callee is already on the line.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from gateway.api.dialing import ANSWER_CALL_PARAMETER
from gateway.carriers import CarrierAdapter, HttpRequest, InboundCall
from gateway.errors import ConflictError, NotFoundError, SignatureError
from gateway.log import bind_call
from gateway.server.answer import (
    FROM_PARAMETER,
    LEASE_PARAMETER,
    REFUSAL_HEADER,
    media_url,
    signing_credential,
)
from gateway.server.context import Engine
from gateway.store.models import CallRecord, CallStatus, Direction

__all__ = ["answer_outbound", "outbound_call_id"]

log = logging.getLogger("gateway.answer")

_OUTBOUND_DIRECTIONS = frozenset({"outbound-api", "outbound"})  # Twilio, Plivo
_NOT_QUEUED = "call_not_queued"
"""Refusal reason: the call already ended (or failed) before it was answered."""


def outbound_call_id(request: HttpRequest) -> str | None:
    """Our call id, when ``request`` is an answer request for one of our outbound calls."""
    values = parse_qs(urlsplit(request.url).query).get(ANSWER_CALL_PARAMETER)
    return values[0] if values else None


async def answer_outbound(
    engine: Engine,
    adapter: CarrierAdapter,
    request: HttpRequest,
    call: InboundCall,
    call_id: str,
) -> web.Response:
    """Connect an answered outbound call to its agent (see the module docstring)."""
    record = await _record(engine, adapter, call_id)
    await _verify(engine, adapter, request, call, record)
    with bind_call(call_id, record.tenant_id):
        if record.status is CallStatus.LIVE and record.carrier_call_id == call.call_id:
            pass  # the carrier retried this request: answer it again
        elif record.status is not CallStatus.QUEUED:
            return _refuse(engine, adapter, _NOT_QUEUED, call)
        tenant = await engine.state.directory.get_tenant(record.tenant_id)
        try:
            admission = await engine.coordination.admit(
                tenant.id,
                call_id,
                limit=tenant.max_concurrent_calls,
                ttl=engine.settings.reservation_ttl_s,
            )
        except ConflictError:  # the media stream already claimed it: a late retry
            return _refuse(engine, adapter, _NOT_QUEUED, call)
        if admission.lease is None:
            assert admission.reason is not None
            now_ms = round(engine.wall_clock() * 1000)
            await engine.state.ledger.dial_ended(
                call_id, CallStatus.FAILED, admission.reason.value, now_ms
            )
            return _refuse(engine, adapter, admission.reason.value, call)
        return await _connect(engine, adapter, call, record, admission.lease.token)


async def _record(engine: Engine, adapter: CarrierAdapter, call_id: str) -> CallRecord:
    try:
        record = await engine.state.ledger.get_call(call_id)
    except NotFoundError:
        record = None
    if record is None or record.direction is not Direction.OUTBOUND:
        raise web.HTTPNotFound(text="no such outbound call\n")
    if record.carrier != adapter.name:
        raise web.HTTPNotFound(text="no such outbound call on this carrier\n")
    return record


async def _verify(
    engine: Engine,
    adapter: CarrierAdapter,
    request: HttpRequest,
    call: InboundCall,
    record: CallRecord,
) -> None:
    """The carrier's signature and its ids for the call; 403 and nothing written if not."""
    try:
        creds = await engine.state.directory.carrier_credentials(record.tenant_id)
    except NotFoundError:
        creds = None
    credential = None if creds is None else signing_credential(creds)
    try:
        if creds is None or credential is None or creds.carrier != adapter.name:
            raise SignatureError("the call's tenant has no credential for this carrier")
        adapter.verify_request(request, credential, now=engine.wall_clock(), nonces=engine.nonces)
        if call.account_id is not None and call.account_id != creds.account_id:
            raise SignatureError("AccountSid is not the tenant's account")
        if call.direction not in _OUTBOUND_DIRECTIONS:
            raise SignatureError(f"direction {call.direction!r} is not an outbound call's")
        # Twilio's create response gave the CallSid; Plivo's a request_uuid, which the
        # answer request carries as RequestUUID beside the new CallUUID.
        placed = call.param("RequestUUID") if adapter.name == "plivo" else call.call_id
        queued = record.status is CallStatus.QUEUED
        if queued and record.carrier_call_id is not None and placed != record.carrier_call_id:
            raise SignatureError("the carrier's call id is not the one it created")
    except SignatureError as exc:
        log.warning("%s answer for outbound call %s refused: %s", adapter.name, record.id, exc)
        raise web.HTTPForbidden(text="signature check failed\n") from None


async def _connect(
    engine: Engine, adapter: CarrierAdapter, call: InboundCall, record: CallRecord, lease: int
) -> web.Response:
    now = engine.wall_clock()
    await engine.state.ledger.outbound_answered(record.id, call.call_id, round(now * 1000))
    token = engine.tokens.issue(
        provider=adapter.name, call_id=record.id, tenant_id=record.tenant_id, now=now
    )
    parameters = {LEASE_PARAMETER: str(lease)}
    # The agent's "from" is the other party: here the callee.
    remote = "".join(ch for ch in record.remote_number or call.to_number if ch.isalnum())
    if remote:
        parameters[FROM_PARAMETER] = remote[:32]
    document = adapter.answer_document(media_url(engine, adapter.name, token), parameters)
    log.info("answered outbound %s call %s as %s", adapter.name, call.call_id, record.id)
    return web.Response(body=document.body, headers={"Content-Type": document.content_type})


def _refuse(
    engine: Engine, adapter: CarrierAdapter, reason: str, call: InboundCall
) -> web.Response:
    engine.metrics.refused(reason)
    log.info("refused outbound %s call %s: %s", adapter.name, call.call_id, reason)
    kind = "busy" if reason == "quota_exceeded.concurrent_calls" else "rejected"
    document = adapter.refusal_document(kind)
    return web.Response(
        body=document.body,
        headers={"Content-Type": document.content_type, REFUSAL_HEADER: reason},
    )
