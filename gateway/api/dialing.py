"""``POST /v1/calls``: dial a PSTN participant through the tenant's carrier.

An outbound call passes the same admission as an inbound one (ARCHITECTURE.md "One
call, end to end"), in the same order, before anything is stored:

1. the agent exists and is published (404 / 409 ``agent_not_published``);
2. a carrier is connected and can place calls for us (404 ``carrier_not_connected``;
   Vonage: 501 ``outbound_not_supported``, see :mod:`gateway.api.carrier_api`);
3. the balance is above zero (**402** ``balance_depleted``: Payment Required says what
   the client must do, where a 403 would say the key lacks a permission);
4. a concurrency slot is reserved with :meth:`Coordination.admit` (429
   ``quota_exceeded.concurrent_calls``; 503 when the backend cannot count). Reserved
   slots of queued outbound calls and live calls of either direction count alike.

Then the call row is written (``queued``, direction ``outbound``) and the carrier asked
to place the call, with our answer URL for this call
(``<public base>/inbound/<provider>?rymi_call=<call id>``; the carriers sign the whole
URL, query included, so the id cannot be swapped). The slot is reserved for the ring
timeout (which the carrier is given too) plus the usual reservation TTL, so it outlives
the ringing. If the carrier refuses or cannot be reached, the slot is released and the
call ends ``failed`` with ``carrier_dial_failed``, unbilled (502).

When the callee answers, the carrier requests the answer URL and the call engine
(:mod:`gateway.server.outbound`) connects the call to the agent under the reserved slot.

``POST /v1/calls/{id}/end`` on a call still queued cancels it (:func:`cancel_queued`):
the row ends ``canceled`` (unbilled), the slot is released, and the carrier is asked to
stop dialing; should the callee pick up anyway, the answer is refused.
"""

from __future__ import annotations

import logging
import time
import uuid
from urllib.parse import urlencode

from aiohttp import web

from gateway.api.auth import SETTINGS
from gateway.api.call_schemas import AgentRef, CallCreated, CreateCall, ParticipantOut
from gateway.api.carrier_api import Dial
from gateway.api.http import (
    COORDINATION,
    DIRECTORY,
    LEDGER,
    TENANT,
    api_error,
    json_response,
    read_json,
)
from gateway.api.telephony import CARRIER_API
from gateway.errors import (
    CarrierApiError,
    ConflictError,
    CoordinationUnavailable,
    NotFoundError,
    ValidationError,
)
from gateway.reasons import RefusalReason
from gateway.store.models import (
    Agent,
    CallRecord,
    CallStart,
    CallStatus,
    CarrierCredentials,
    Direction,
    Number,
    VonageCredentials,
    validate_e164,
)

__all__ = [
    "ANSWER_CALL_PARAMETER",
    "CANCELED",
    "CARRIER_DIAL_FAILED",
    "answer_url",
    "cancel_queued",
    "create_call",
]

log = logging.getLogger("gateway.api")

ANSWER_CALL_PARAMETER = "rymi_call"
"""Query parameter of an outbound call's answer URL: our call id."""
CARRIER_DIAL_FAILED = "carrier_dial_failed"
"""End reason of an outbound call the carrier would not place."""
CANCELED = "canceled"
"""End reason of a queued call ended through the API before it was answered."""


def answer_url(base_url: str, provider: str, call_id: str) -> str:
    """The answer URL the carrier requests when the callee of ``call_id`` answers."""
    query = urlencode({ANSWER_CALL_PARAMETER: call_id})
    return f"{base_url.rstrip('/')}/inbound/{provider}?{query}"


async def create_call(request: web.Request) -> web.Response:
    """Dial the call's PSTN participant through the tenant's carrier (202 queued)."""
    body = await read_json(request, CreateCall)
    to_number, from_number = _participant(body)
    tenant_id = request[TENANT]
    directory = request.app[DIRECTORY]
    agent = await directory.get_agent(tenant_id, body.agent_id)
    if not agent.published:
        raise api_error(
            409, "agent_not_published", "Agent not published", "publish the agent first"
        )
    credentials = await _credentials(request, tenant_id)
    from_number = _caller_id(await directory.list_numbers(tenant_id), agent, from_number)
    if await request.app[LEDGER].balance_micros(tenant_id) <= 0:
        raise api_error(
            402, RefusalReason.BALANCE_DEPLETED.value, "Balance depleted", "top up to dial"
        )
    call_id = str(uuid.uuid4())
    lease_token = await _admit(request, tenant_id, call_id)
    start = CallStart(
        call_id=call_id,
        tenant_id=tenant_id,
        agent_id=agent.id,
        number=from_number,
        carrier=credentials.carrier,
        role=agent.role,
        max_call_duration_s=agent.max_call_duration_s,
        answered_at_ms=time.time_ns() // 1_000_000,
        direction=Direction.OUTBOUND,
        remote_number=to_number,
    )
    try:
        await request.app[LEDGER].queue_call(start)
    except BaseException:
        await request.app[COORDINATION].release(tenant_id, call_id, lease_token)
        raise
    await _place(request, credentials, start, lease_token)
    participant = ParticipantOut(call_id, "pstn", to_number, "joining", call_id)
    result = CallCreated(
        id=call_id,
        room_name=f"call_{call_id}",
        status="queued",
        direction="outbound",
        provider=credentials.carrier,  # type: ignore[arg-type]  # twilio or plivo here
        from_number=from_number,
        participants=[participant],
        agent=AgentRef(agent.id, agent.name),
    )
    return json_response(result, status=202)


def _participant(body: CreateCall) -> tuple[str, str | None]:
    """The one PSTN participant's number and optional caller ID."""
    if len(body.participants) != 1 or body.participants[0].transport != "pstn":
        raise ValidationError(
            "participants",
            'expected exactly one participant {"transport": "pstn", "identity": <E.164>}'
            " (this gateway dials phone numbers; it has no WebRTC)",
        )
    participant = body.participants[0]
    to_number = validate_e164(participant.identity, "participants[0].identity")
    from_number = participant.from_number
    if from_number is not None:
        validate_e164(from_number, "participants[0].from_number")
    return to_number, from_number


async def _credentials(request: web.Request, tenant_id: str) -> CarrierCredentials:
    try:
        credentials = await request.app[DIRECTORY].carrier_credentials(tenant_id)
    except NotFoundError:
        raise api_error(404, "carrier_not_connected", "No carrier connected") from None
    if isinstance(credentials, VonageCredentials):
        raise api_error(
            501,
            "outbound_not_supported",
            "Outbound calls not supported",
            "Vonage places calls only for a Vonage application (a JWT signed with the"
            " application's private key), which a Vonage connection here does not hold",
        )
    if request.app[SETTINGS].public_base_url is None:
        raise api_error(
            501,
            "outbound_not_supported",
            "Outbound calls not supported",
            "the gateway has no public base URL (RYMI_PUBLIC_BASE_URL) for the carrier",
        )
    return credentials


def _caller_id(numbers: list[Number], agent: Agent, wanted: str | None) -> str:
    """The caller ID: the one asked for (must be the tenant's), else the agent's number."""
    if wanted is not None:
        if wanted not in {n.number for n in numbers}:
            raise ValidationError(
                "participants[0].from_number", "expected one of this account's numbers"
            )
        return wanted
    attached = [n.number for n in numbers if n.agent_id == agent.id]
    if not attached:
        raise ValidationError(
            "participants[0].from_number",
            "required: no number is attached to this agent to call from",
        )
    return attached[0]


async def _admit(request: web.Request, tenant_id: str, call_id: str) -> int:
    """Reserve a slot for the call's ringing and answer; its fencing token."""
    settings = request.app[SETTINGS]
    tenant = await request.app[DIRECTORY].get_tenant(tenant_id)
    admission = await request.app[COORDINATION].admit(
        tenant_id,
        call_id,
        limit=tenant.max_concurrent_calls,
        ttl=settings.outbound_ring_timeout_s + settings.reservation_ttl_s,
    )
    if admission.lease is not None:
        return admission.lease.token
    if admission.reason is RefusalReason.QUOTA_CONCURRENT_CALLS:
        raise api_error(
            429,
            RefusalReason.QUOTA_CONCURRENT_CALLS.value,
            "Too many concurrent calls",
            f"the account's limit of {tenant.max_concurrent_calls} concurrent calls is reached",
            # A slot frees when a call ends; there is no better moment to name.
            headers={"Retry-After": "1"},
        )
    raise api_error(503, "coordination_unavailable", "Service unavailable")


async def _place(
    request: web.Request, credentials: CarrierCredentials, start: CallStart, lease_token: int
) -> None:
    """Ask the carrier to dial; on failure release the slot and end the call unbilled."""
    settings = request.app[SETTINGS]
    assert settings.public_base_url is not None  # checked by _credentials
    assert start.remote_number is not None
    dial = Dial(
        to_number=start.remote_number,
        from_number=start.number,
        answer_url=answer_url(settings.public_base_url, start.carrier, start.call_id),
        ring_timeout_s=settings.outbound_ring_timeout_s,
    )
    ledger = request.app[LEDGER]
    try:
        carrier_call_id = await request.app[CARRIER_API].dial(credentials, dial)
    except CarrierApiError as exc:
        await request.app[COORDINATION].release(start.tenant_id, start.call_id, lease_token)
        ended = time.time_ns() // 1_000_000
        await ledger.dial_ended(start.call_id, CallStatus.FAILED, CARRIER_DIAL_FAILED, ended)
        log.warning("outbound call %s: the carrier did not place it: %s", start.call_id, exc)
        title, detail = "Carrier did not place the call", f"{exc} (call {start.call_id})"
        raise api_error(502, CARRIER_DIAL_FAILED, title, detail) from None
    await ledger.dial_placed(start.call_id, carrier_call_id)


async def cancel_queued(request: web.Request, record: CallRecord) -> bool:
    """End a queued call before it is answered; False if it is not queued any more."""
    now_ms = time.time_ns() // 1_000_000
    if not await request.app[LEDGER].dial_ended(record.id, CallStatus.CANCELED, CANCELED, now_ms):
        return False
    await _release_reservation(request, record)
    if record.carrier_call_id is None:
        return True  # the carrier never answered the create request: nothing to stop
    try:
        credentials = await request.app[DIRECTORY].carrier_credentials(record.tenant_id)
        await request.app[CARRIER_API].cancel(credentials, record.carrier_call_id)
    except (CarrierApiError, NotFoundError) as exc:
        # Best effort: if the callee answers anyway, the answer is refused (not queued).
        log.warning("outbound call %s: the carrier was not told to stop: %s", record.id, exc)
    return True


async def _release_reservation(request: web.Request, record: CallRecord) -> None:
    coordination = request.app[COORDINATION]
    # Reserving a call id that is reserved hands back that reservation (the way a retried
    # answer webhook gets its slot again): that is how the slot's token is found here.
    try:
        admission = await coordination.reserve(
            record.tenant_id,
            record.id,
            limit=None,
            ttl=request.app[SETTINGS].reservation_ttl_s,
        )
        if admission.lease is not None:
            await coordination.release(record.tenant_id, record.id, admission.lease.token)
    except ConflictError:
        return  # no longer a reservation (ended): nothing held
    except CoordinationUnavailable as exc:
        log.warning("outbound call %s: slot not released (expires by TTL): %s", record.id, exc)
