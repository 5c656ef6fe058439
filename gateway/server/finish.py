"""The ending sequence of a call, run once, shielded, each step on its own.

reliability.md 5.4 fixes the order: (1) stop reading (the task group is already
cancelled); (2) flush the caller audio already received to the agent, then ``stop``
and close the agent (the link flushes its queue first, bounded); (3) hang up the
carrier leg through its REST API when the caller is still on the line, and close the
media socket; (4) finalize the call record, exactly once (the ledger guarantees it);
(5) release the lease. A step that fails is logged and the next one still runs: a
broken agent must not leave a lease held, and a database hiccup must not leave the
carrier leg up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import aiohttp

from gateway.bridge.protocol import Stop
from gateway.call_events import EndCall
from gateway.errors import CoordinationUnavailable, GatewayError
from gateway.metrics import LeaseOp
from gateway.store.ledger import Finalized
from gateway.store.models import CallEnd, PlivoCredentials, TwilioCredentials

if TYPE_CHECKING:
    from gateway.server.call import CallRunner
    from gateway.server.context import Engine
    from gateway.store.coordination import Lease

__all__ = ["carrier_hangup", "finish_call"]

log = logging.getLogger("gateway.call")

_HANGUP_TIMEOUT_S = 5.0
_FINALIZE_ATTEMPTS = 3


async def finish_call(runner: CallRunner) -> None:
    """Run the ending sequence for ``runner``'s call (see the module docstring)."""
    end = runner.session.end
    assert end is not None
    engine, setup = runner.engine, runner.setup
    await _step("agent", _close_agent(runner, end))
    _log_stats(runner)
    runner.meter.ended(end.reason.value, runner.drops())
    if end.carrier_hangup:
        await _step("carrier hang-up", carrier_hangup(engine, setup.record.carrier, runner))
    await _step("carrier socket", setup.conn.close(end.close_code))
    if not end.finalize:
        return
    ended_ms = round(engine.wall_clock() * 1000)
    await _step("finalize", _finalize_and_meter(runner, end, ended_ms))
    await _step("release", _release(engine, setup.lease))


async def _finalize_and_meter(runner: CallRunner, end: EndCall, ended_ms: int) -> None:
    """Finalize, then count the billed figures the ledger settled (once per call)."""
    result = await finalize(runner.engine, runner.call_id, end, ended_ms)
    if result is None or not result.won:
        return  # another writer (the reaper, a fenced instance) settled and counted it
    final = result.record
    if final.billable_units is not None:
        runner.engine.metrics.billed(
            final.role, final.audio_ms / 1000, final.billable_units, final.tenant_id
        )


async def _release(engine: Engine, lease: Lease) -> None:
    metrics = engine.metrics
    try:
        await engine.coordination.release(lease.tenant, lease.call_id, lease.token)
    except CoordinationUnavailable:
        metrics.lease_operation(LeaseOp.RELEASE, "error")
        metrics.coordination_error(LeaseOp.RELEASE)
        raise
    metrics.lease_operation(LeaseOp.RELEASE, "ok")


def _log_stats(runner: CallRunner) -> None:
    """One line of the call's media counters (no payloads), for operators and tuning."""
    pacer = runner.agent_media.stats
    dropped = runner.pending_dropped
    if runner.link is not None:
        dropped += runner.link.stats().dropped_frames
    log.info(
        "call %s media: caller frames %d (to agent %d, dropped %d), agent frames sent %d "
        "(dropped %d, cleared %d, late %d, max lateness %.1f ms, underruns %d), "
        "marks played %d / cleared %d, max carrier mark drift %.1f ms",
        runner.call_id,
        runner.caller.frames,
        runner.frames_to_agent,
        dropped,
        pacer.frames_sent,
        pacer.frames_dropped,
        pacer.frames_cleared,
        pacer.late_frames,
        pacer.max_lateness_ms,
        pacer.underruns,
        pacer.marks_played,
        pacer.marks_cleared,
        pacer.max_mark_drift_ms,
    )


async def _close_agent(runner: CallRunner, end: EndCall) -> None:
    link = runner.link
    if link is None:
        return
    if runner.agent_ready:
        pcm, out = runner.caller.flush()
        if pcm:
            link.send_audio(pcm)
        runner.to_agent(out.agent)
    await link.close(Stop(reason=end.reason.value))


async def finalize(engine: Engine, call_id: str, end: EndCall, ended_ms: int) -> Finalized | None:
    """Write the final record, retrying a failing database a few times; returns it."""
    record = CallEnd(call_id, end.status, end.reason.value, ended_ms, end.audio_ms)
    for attempt in range(1, _FINALIZE_ATTEMPTS + 1):
        try:
            result = await engine.state.ledger.finalize(record)
        except GatewayError:
            if attempt == _FINALIZE_ATTEMPTS:
                raise  # the reaper bills it from its last checkpoint
            await asyncio.sleep(0.2 * attempt)
        else:
            final = result.record
            log.info(
                "call %s final: %s, %d ms, %s units",
                call_id,
                final.end_reason,
                final.audio_ms,
                final.billable_units,
            )
            return result
    return None


async def carrier_hangup(engine: Engine, carrier: str, runner: CallRunner) -> None:
    """End the carrier leg through the adapter's REST request (Twilio, Plivo).

    Vonage needs the application's private key to hang up over REST, which the
    directory does not hold: closing the socket ends a Vonage call instead, since our
    NCCO has nothing after ``connect`` (docs/carriers.md).
    """
    record = runner.setup.record
    if record.carrier_call_id is None:
        return
    creds = await engine.state.directory.carrier_credentials(record.tenant_id)
    if not isinstance(creds, TwilioCredentials | PlivoCredentials):
        return
    request = runner.setup.adapter.hangup_request(
        record.carrier_call_id,
        creds.account_id,
        creds.auth_token.reveal(),
        now=engine.wall_clock(),
        base_url=engine.settings.carrier_api_base_url(carrier),
    )
    timeout = aiohttp.ClientTimeout(total=_HANGUP_TIMEOUT_S)
    async with engine.http.request(
        request.method,
        request.url,
        headers=dict(request.headers),
        data=request.body or None,
        timeout=timeout,
    ) as response:
        if response.status >= 300:
            log.warning(
                "call %s: carrier hang-up answered HTTP %d", runner.call_id, response.status
            )


async def _step(name: str, work: Awaitable[object]) -> None:
    try:
        await work
    except Exception:
        log.exception("call ending: step %s failed", name)
