"""``/v1/calls``: call records, live calls, transcripts, and hanging up a live call.

Statuses use the SDK's vocabulary (``queued | ringing | in_progress | completed |
failed | no_answer | busy | canceled``); a call the ledger holds as ``live`` is
``in_progress``. ``queued`` is an outbound call the carrier is dialing (the carriers do
not tell us when it starts ringing, so there are no ``ringing`` calls: filtering on it
gives an empty page). "Active" calls are the queued and the in-progress ones: both hold
a concurrency slot.

``POST /v1/calls/{id}/end`` finds the gateway instance that owns the call's lease and
sends it a hang-up command through the coordination backend (any instance of a fleet
may receive the request); a call that is not live is a 404. Outbound dialing
(``POST /v1/calls``) is :mod:`gateway.api.dialing`.
"""

from __future__ import annotations

import time

from aiohttp import web

from gateway.api.call_schemas import (
    CallBilling,
    CallCreated,
    CallEnded,
    CallList,
    CallOut,
    CallsQuery,
    CreateCall,
    Transcript,
    TranscriptLineOut,
)
from gateway.api.dialing import cancel_queued, create_call
from gateway.api.http import (
    COORDINATION,
    LEDGER,
    TENANT,
    api_error,
    iso_ms,
    json_response,
    read_query,
)
from gateway.api.routes import Route
from gateway.errors import NotFoundError
from gateway.metering import RATE_PER_MINUTE_MICROS, UNIT_MS, micros_to_usd
from gateway.store.coordination import Command
from gateway.store.models import CallRecord, CallStatus, TranscriptLine

__all__ = ["ROUTES", "call_out"]

_API_STATUS = {CallStatus.LIVE: "in_progress"}
_STORE_STATUS: dict[str, list[CallStatus]] = {"in_progress": [CallStatus.LIVE]}
_NEVER = frozenset({"ringing"})  # the carriers' create responses do not report ringing
_ACTIVE = [CallStatus.QUEUED, CallStatus.LIVE]
_HANGUP_REASON = "admin_hangup"  # gateway.call_events.EndReason.ADMIN_HANGUP


def call_out(record: CallRecord, transcript: list[TranscriptLine] | None = None) -> CallOut:
    """The API shape of a call record."""
    end_ms = record.ended_at_ms if record.ended_at_ms is not None else time.time_ns() // 10**6
    cost = None if record.cost_micros is None else float(micros_to_usd(record.cost_micros))
    units = record.billable_units
    seconds = None if units is None else units * UNIT_MS // 1000
    return CallOut(
        id=record.id,
        agent_id=record.agent_id,
        status=_API_STATUS.get(record.status, record.status.value),
        direction=record.direction.value,
        provider=record.carrier,
        number=record.number,
        started_at=iso_ms(record.answered_at_ms) or "",
        ended_at=iso_ms(record.ended_at_ms),
        end_reason=record.end_reason,
        duration_seconds=max(0, end_ms - record.answered_at_ms) / 1000,
        bill_duration=seconds,
        total_cost=cost,
        billing=CallBilling(
            role=record.role.value,
            rate_per_minute=float(micros_to_usd(RATE_PER_MINUTE_MICROS[record.role])),
            billable_units=units,
            billable_seconds=seconds,
            cost_usd=cost,
        ),
        transcript=None if transcript is None else [_line(line) for line in transcript],
        remote_number=record.remote_number,
    )


def _line(line: TranscriptLine) -> TranscriptLineOut:
    caller = line.speaker == "caller"
    return TranscriptLineOut(
        speaker="caller" if caller else "agent",
        type="user_input" if caller else "ai_response",
        text=line.text,
        timestamp=iso_ms(line.at_ms) or "",
    )


async def _page(request: web.Request, statuses: list[CallStatus] | None) -> web.Response:
    query = read_query(request, CallsQuery)
    if query.status in _NEVER:
        statuses = []
    elif query.status is not None:
        wanted = _STORE_STATUS.get(query.status) or [CallStatus(query.status)]
        statuses = wanted if statuses is None else [s for s in statuses if s in wanted]
    page = await request.app[LEDGER].page_calls(
        request[TENANT],
        limit=query.limit,
        offset=query.offset,
        cursor=query.cursor,
        statuses=statuses,
    )
    calls = [call_out(record) for record in page.calls]
    return json_response(CallList(calls, page.total, query.limit, query.offset, page.next_cursor))


async def list_calls(request: web.Request) -> web.Response:
    """The tenant's calls, newest first (limit/offset, or the cursor of the previous page)."""
    return await _page(request, None)


async def active_calls(request: web.Request) -> web.Response:
    """The tenant's queued and live calls, newest first."""
    return await _page(request, _ACTIVE)


async def get_call(request: web.Request) -> web.Response:
    """One call with its transcript and billing."""
    ledger = request.app[LEDGER]
    record = await ledger.get_call(request.match_info["call_id"], request[TENANT])
    return json_response(call_out(record, await ledger.transcript(record.id)))


async def get_transcript(request: web.Request) -> web.Response:
    """The call's transcript lines, in order."""
    ledger = request.app[LEDGER]
    record = await ledger.get_call(request.match_info["call_id"], request[TENANT])
    lines = await ledger.transcript(record.id)
    return json_response(Transcript(record.id, [_line(line) for line in lines]))


async def end_call(request: web.Request) -> web.Response:
    """Hang up a live call on whichever gateway instance runs it; cancel a queued one."""
    ledger = request.app[LEDGER]
    record = await ledger.get_call(request.match_info["call_id"], request[TENANT])
    not_live = api_error(404, "call_not_live", "Call not live", f"call {record.id} is not live")
    if record.status is CallStatus.QUEUED:
        if await cancel_queued(request, record):
            message = "The call was canceled before it was answered."
            return json_response(CallEnded("canceled", record.id, message))
        record = await ledger.get_call(record.id)  # answered (or ended) meanwhile
    if record.final:
        raise not_live
    try:
        await request.app[COORDINATION].send_command(
            record.id, Command.HANGUP, reason=_HANGUP_REASON
        )
    except NotFoundError:
        raise not_live from None
    message = "Hang-up sent to the gateway instance running the call."
    return json_response(CallEnded("ending", record.id, message))


ROUTES = [
    Route(
        "POST",
        "/calls",
        create_call,
        "Dial a PSTN participant (outbound call)",
        "calls",
        body=CreateCall,
        responses={202: CallCreated},
        errors=(402, 404, 409, 429, 501, 502),
    ),
    Route(
        "GET",
        "/calls",
        list_calls,
        "List calls",
        "calls",
        query=CallsQuery,
        responses={200: CallList},
    ),
    Route(
        "GET",
        "/calls/active",
        active_calls,
        "List live calls",
        "calls",
        query=CallsQuery,
        responses={200: CallList},
    ),
    Route(
        "GET", "/calls/{call_id}", get_call, "Retrieve a call", "calls", responses={200: CallOut}
    ),
    Route(
        "GET",
        "/calls/{call_id}/transcript",
        get_transcript,
        "A call's transcript",
        "calls",
        responses={200: Transcript},
    ),
    Route(
        "POST",
        "/calls/{call_id}/end",
        end_call,
        "Hang up a live call",
        "calls",
        responses={200: CallEnded},
    ),
]
