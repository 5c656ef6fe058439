"""``GET /media/{provider}/{token}``: the carrier's media WebSocket, verified, then run.

Before anything is created for the call (reliability.md 5.2):

1. the call token's MAC, provider binding and expiry are checked (no I/O);
2. the carrier's upgrade signature, where it sends one, with the tenant's credential
   (Twilio ``X-Twilio-Signature``, Plivo V3, Vonage JWT): **403 before the upgrade**;
3. the token is consumed (single use, shared registry in a fleet);
4. after the upgrade, ``start`` must arrive within ``media_start_timeout_s`` (else
   close 4000); its call id must be the carrier call id the token's call was answered
   for (else 1008); then the reserved lease is claimed (any instance may), the media
   start is noted on the call record, and the :class:`~gateway.server.call.CallRunner`
   takes over.

A token that fails (malformed, forged, expired, reused, wrong provider) is answered by
accepting the socket and closing it with 1008 (policy violation), so the carrier logs a
close code rather than a failed handshake. Nothing is billed for a rejected socket.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from gateway import carriers
from gateway.call_events import MediaStarted, Tick
from gateway.calltoken import CallTokenClaims
from gateway.carriers import (
    CarrierAdapter,
    Headers,
    HttpRequest,
    MediaStream,
    StreamStarted,
    public_url,
)
from gateway.errors import (
    CallTokenError,
    CarrierProtocolError,
    CloseCode,
    CoordinationUnavailable,
    NotFoundError,
    SignatureError,
)
from gateway.log import bind_call
from gateway.metrics import LeaseOp
from gateway.server.answer import LEASE_PARAMETER, signing_credential
from gateway.server.call import CallRunner, CallSetup
from gateway.server.carrier_socket import CarrierSocket
from gateway.server.context import ENGINE, Engine
from gateway.server.limits import MessageRate
from gateway.session import CallSession, SessionConfig
from gateway.store.models import CallEnd, CallRecord, CallStatus

__all__ = ["media"]

log = logging.getLogger("gateway.media")


async def media(request: web.Request) -> web.StreamResponse:
    """Handle the media WebSocket upgrade and run the call on it."""
    engine = request.app[ENGINE]
    try:
        adapter = carriers.get(request.match_info["provider"])
    except LookupError:
        raise web.HTTPNotFound(text="unknown carrier\n") from None
    token = request.match_info["token"]
    try:
        claims = engine.tokens.verify(token, adapter.name, engine.wall_clock())
    except CallTokenError as exc:
        return await _reject(request, engine, f"call token refused ({exc.reason})")
    with bind_call(claims.call_id, claims.tenant_id):
        # Every log line of this call, in every task it starts, names the call and tenant.
        await _verify_upgrade(request, engine, adapter, claims)
        try:
            claims = await engine.tokens.redeem(
                token, adapter.name, engine.wall_clock(), engine.token_uses
            )
        except CallTokenError as exc:
            return await _reject(request, engine, f"call token refused ({exc.reason})")
        except CoordinationUnavailable:
            return await _reject(
                request, engine, "token registry unavailable", CloseCode.TRY_AGAIN_LATER
            )
        return await _run(request, engine, adapter, claims)


async def _reject(
    request: web.Request, engine: Engine, why: str, code: CloseCode = CloseCode.POLICY_VIOLATION
) -> web.WebSocketResponse:
    log.warning("media socket rejected: %s", why)
    return await _close_for_cause(engine, request, _socket(engine), code, why)


async def _close_for_cause(
    engine: Engine,
    request: web.Request,
    ws: web.WebSocketResponse,
    code: CloseCode | int,
    why: str = "",
) -> web.WebSocketResponse:
    """Close a carrier socket rejected for cause, and count it by close code."""
    engine.metrics.websocket_rejected(int(code))
    if not ws.prepared:
        await ws.prepare(request)
    await ws.close(code=code, message=why[:120].encode())
    return ws


def _socket(engine: Engine) -> web.WebSocketResponse:
    # reliability.md 5.3: no compression, 64 KiB messages. Pings come from the call's own
    # keepalive (CallRunner, RYMI_MEDIA_PING_INTERVAL_S), not aiohttp's heartbeat, which
    # re-arms its timer through a loop callback on every message: 50 times a second per
    # call for a check that carriers' continuous audio already answers.
    return web.WebSocketResponse(
        max_msg_size=engine.settings.media_max_message_bytes, compress=False, heartbeat=None
    )


async def _verify_upgrade(
    request: web.Request, engine: Engine, adapter: CarrierAdapter, claims: CallTokenClaims
) -> None:
    """The carrier's upgrade signature, where it sends one; 403 before the upgrade."""
    signed = any(h in request.headers for h in ("X-Twilio-Signature", "X-Plivo-Signature-V3"))
    if adapter.name == "plivo" and not signed:
        return  # Plivo's upgrade signature is unconfirmed (docs/carriers.md): token only
    try:
        creds = await engine.state.directory.carrier_credentials(claims.tenant_id)
    except NotFoundError:
        raise web.HTTPForbidden(text="carrier not connected\n") from None
    credential = signing_credential(creds)
    if credential is None or creds.carrier != adapter.name:
        raise web.HTTPForbidden(text="carrier not connected\n")
    http_request = HttpRequest(
        "GET",
        public_url(engine.settings.base_url, request.path_qs),
        Headers(request.headers.items()),
    )
    try:
        adapter.verify_upgrade(
            http_request, credential, now=engine.wall_clock(), nonces=engine.nonces
        )
    except SignatureError as exc:
        log.warning("%s media upgrade: bad signature (%s)", adapter.name, exc)
        raise web.HTTPForbidden(text="signature check failed\n") from None


async def _run(
    request: web.Request, engine: Engine, adapter: CarrierAdapter, claims: CallTokenClaims
) -> web.WebSocketResponse:
    ws = _socket(engine)
    await ws.prepare(request)
    loop = asyncio.get_running_loop()
    try:
        record = await engine.state.ledger.get_call(claims.call_id, claims.tenant_id)
    except NotFoundError:
        record = None
    if record is None or record.status is not CallStatus.LIVE:
        log.warning("media socket for call %s refused: the call is not live", claims.call_id)
        return await _close_for_cause(engine, request, ws, CloseCode.CALL_ENDED, "call is not live")
    session = CallSession(_session_config(engine, record), loop.time())
    stream = adapter.open_stream(max_message_bytes=engine.settings.media_max_message_bytes)
    rate = MessageRate(engine.settings.media_max_messages_per_s)
    deadline = session.next_deadline()
    assert deadline is not None
    try:
        started = await _await_start(ws, stream, rate, deadline - loop.time())
    except CarrierProtocolError as exc:
        return await _close_for_cause(engine, request, ws, exc.close_code)
    if started is None:
        # No start by the deadline (or the socket went first): the session ends the call.
        session.handle(Tick(), max(loop.time(), deadline))
        end = session.end
        assert end is not None
        log.warning("media socket for call %s: no start in time", record.id)
        await _close_for_cause(engine, request, ws, end.close_code)
        await _finalize_unstarted(engine, record, end.reason.value)
        return ws
    if started.call_id != record.carrier_call_id:
        log.warning("media socket for call %s: start is for another call", record.id)
        why = "start is for another call"
        return await _close_for_cause(engine, request, ws, CloseCode.POLICY_VIOLATION, why)
    setup = await _claim(engine, request, ws, adapter, stream, started, record, rate)
    if setup is None:
        return ws
    session.handle(MediaStarted(), loop.time())
    await engine.state.ledger.media_started(record.id, round(engine.wall_clock() * 1000))
    await CallRunner(engine, setup, session).run()
    return ws


def _session_config(engine: Engine, record: CallRecord) -> SessionConfig:
    settings = engine.settings
    limit = record.max_call_duration_s
    if settings.max_call_duration_cap_s is not None:
        limit = min(limit, settings.max_call_duration_cap_s)
    return SessionConfig(
        max_duration_s=limit,
        warning_s=settings.duration_warning_s,
        start_timeout_s=settings.media_start_timeout_s,
        agent_grace_s=settings.agent_grace_s,
        checkpoint_interval_s=settings.checkpoint_interval_s,
    )


async def _await_start(
    ws: web.WebSocketResponse, stream: MediaStream, rate: MessageRate, timeout_s: float
) -> StreamStarted | None:
    """The carrier's ``start``, or None when it did not come in time (or the socket went)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    return None
                if not rate.allow(loop.time()):
                    raise CarrierProtocolError(
                        stream.carrier, "message rate over the limit", CloseCode.POLICY_VIOLATION
                    )
                for event in stream.receive(msg.data):
                    if isinstance(event, StreamStarted):
                        return event
    except TimeoutError:
        return None
    return None


async def _finalize_unstarted(engine: Engine, record: CallRecord, reason: str) -> None:
    """A socket that never started: the call ends unbilled (its slot expires by TTL)."""
    end = CallEnd(record.id, CallStatus.FAILED, reason, round(engine.wall_clock() * 1000), 0)
    await engine.state.ledger.finalize(end)


async def _claim(
    engine: Engine,
    request: web.Request,
    ws: web.WebSocketResponse,
    adapter: CarrierAdapter,
    stream: MediaStream,
    started: StreamStarted,
    record: CallRecord,
    rate: MessageRate,
) -> CallSetup | None:
    """Claim the reserved lease; None (socket closed) if refused."""
    raw = started.custom_parameters.get(LEASE_PARAMETER, "")
    code, why = CloseCode.POLICY_VIOLATION, "no reservation for this call"
    metrics = engine.metrics
    if raw.isdigit() and int(raw) > 0:
        try:
            claim = await engine.coordination.claim(
                record.tenant_id, record.id, int(raw), ttl=engine.settings.lease_ttl_s
            )
        except CoordinationUnavailable:
            claim, code, why = None, CloseCode.TRY_AGAIN_LATER, "coordination unavailable"
            metrics.lease_operation(LeaseOp.CLAIM, "error")
            metrics.coordination_error(LeaseOp.CLAIM)
        if claim is not None:
            metrics.lease_operation(LeaseOp.CLAIM, claim.status.value)
        if claim is not None and claim.lease is not None:
            agent = await engine.state.directory.get_agent(record.tenant_id, record.agent_id or "")
            socket = CarrierSocket(ws, request.transport)
            return CallSetup(ws, adapter, stream, started, record, agent, claim.lease, rate, socket)
        if claim is not None:
            why = f"lease {claim.status.value}"
    log.warning("media socket for call %s refused: %s", record.id, why)
    await _close_for_cause(engine, request, ws, code, why)
    return None
