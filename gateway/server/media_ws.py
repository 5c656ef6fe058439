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

from aiohttp import web

from gateway import carriers
from gateway.call_events import EndReason, MediaStarted, Tick
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
from gateway.server.carrier_ws import CarrierConnection, accept
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
) -> web.StreamResponse:
    log.warning("media socket rejected: %s", why)
    conn = await _accept(request, engine)
    await _close_for_cause(engine, conn, code, why)
    return conn.response


async def _close_for_cause(
    engine: Engine, conn: CarrierConnection, code: CloseCode | int, why: str = ""
) -> web.StreamResponse:
    """Close a carrier socket rejected for cause, and count it by close code."""
    engine.metrics.websocket_rejected(int(code))
    await conn.close(code, why)
    return conn.response


async def _accept(request: web.Request, engine: Engine) -> CarrierConnection:
    # reliability.md 5.3: no compression, 64 KiB messages, a message rate limit. Pings come
    # from the call's own keepalive (CallRunner, RYMI_MEDIA_PING_INTERVAL_S).
    settings = engine.settings
    return await accept(
        request,
        max_message_bytes=settings.media_max_message_bytes,
        rate=MessageRate(settings.media_max_messages_per_s),
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
) -> web.StreamResponse:
    conn = await _accept(request, engine)
    loop = asyncio.get_running_loop()
    try:
        record = await engine.state.ledger.get_call(claims.call_id, claims.tenant_id)
    except NotFoundError:
        record = None
    if record is None or record.status is not CallStatus.LIVE:
        log.warning("media socket for call %s refused: the call is not live", claims.call_id)
        return await _close_for_cause(engine, conn, CloseCode.CALL_ENDED, "call is not live")
    session = CallSession(_session_config(engine, record), loop.time())
    stream = adapter.open_stream(max_message_bytes=engine.settings.media_max_message_bytes)
    deadline = session.next_deadline()
    assert deadline is not None
    try:
        started = await _await_start(conn, stream, deadline - loop.time())
    except CarrierProtocolError as exc:
        return await _close_for_cause(engine, conn, exc.close_code)
    if started is None and conn.failure is not None:
        log.warning("media socket for call %s failed before its start", record.id)
        await _close_for_cause(engine, conn, conn.failure)
        await _finalize_unstarted(engine, record, EndReason.CARRIER_ERROR.value)
        return conn.response
    if started is None:
        # No start by the deadline (or the socket went first): the session ends the call.
        session.handle(Tick(), max(loop.time(), deadline))
        end = session.end
        assert end is not None
        log.warning("media socket for call %s: no start in time", record.id)
        await _close_for_cause(engine, conn, end.close_code)
        await _finalize_unstarted(engine, record, end.reason.value)
        return conn.response
    if started.call_id != record.carrier_call_id:
        log.warning("media socket for call %s: start is for another call", record.id)
        why = "start is for another call"
        return await _close_for_cause(engine, conn, CloseCode.POLICY_VIOLATION, why)
    setup = await _claim(engine, conn, adapter, stream, started, record)
    if setup is None:
        return conn.response
    session.handle(MediaStarted(), loop.time())
    await engine.state.ledger.media_started(record.id, round(engine.wall_clock() * 1000))
    await CallRunner(engine, setup, session).run()
    return conn.response


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
    conn: CarrierConnection, stream: MediaStream, timeout_s: float
) -> StreamStarted | None:
    """The carrier's ``start``, or None when it did not come in time (or the socket went)."""
    try:
        async with asyncio.timeout(timeout_s):
            while (message := await conn.receive()) is not None:
                for event in stream.receive(message):
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
    conn: CarrierConnection,
    adapter: CarrierAdapter,
    stream: MediaStream,
    started: StreamStarted,
    record: CallRecord,
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
            return CallSetup(conn, adapter, stream, started, record, agent, claim.lease)
        if claim is not None:
            why = f"lease {claim.status.value}"
    log.warning("media socket for call %s refused: %s", record.id, why)
    await _close_for_cause(engine, conn, code, why)
    return None
