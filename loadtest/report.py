"""Account a run and report it: the JSON report, the table, the objectives.

:func:`account` turns a :class:`~loadtest.run.RawRun` into the report (a JSON-ready
dict, schema ``rymi-loadtest/1``, described in docs/loadtest.md) with no I/O; the
billing check (:func:`check_billing`) reads the gateway's CDRs. :func:`objectives`
compares a report with stated limits; the CLI exits 1 when one is missed.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.metering import billable_units
from gateway.server.answer import call_id_for
from loadtest import loop as tester_loop
from loadtest.accounting import content_check, match_stream, pacing_jitter
from loadtest.audio import CARRIER_FORMATS, to_pcm8k
from loadtest.gateway_view import answer_view, gateway_view
from loadtest.host import host_figures
from loadtest.player import CallResult
from loadtest.procs import ProcSample
from loadtest.run import RawRun
from loadtest.schedule import FRAME_S
from loadtest.stats import summarize
from loadtest.wire import wire_figures

__all__ = [
    "BOUNDARY_TOLERANCE_MS",
    "DIFFERING_ROWS",
    "SCHEMA",
    "BillingRow",
    "Objective",
    "account",
    "billed_report",
    "check_billing",
    "gateway_answers",
    "loss_ratio",
    "machine",
    "objectives",
    "process_figures",
    "wire_in",
]

SCHEMA = "rymi-loadtest/1"
_AGENT_RATE = 16000  # the agent protocol's default PCM16 rate (docs/agent-protocol.md)
_SETTLE_S = 0.1  # after the agent's start: the audio held while it connected is flushed
_IN_FLIGHT_S = 0.2
_STEADY = ("inbound_steady", "outbound_service_steady")
"""The added latencies again, of frames sent in the steady window only: every call up,
none being set up or torn down (the window the CPU figures use)."""
BOUNDARY_TOLERANCE_MS = 100
DIFFERING_ROWS = 50
"""CDRs whose units differ that the report lists one by one (the first ones)."""
_LONGEST_CALL_MS = 7_200_000  # the largest maxCallDuration (docs/state.md)
"""How far apart the gateway's billing clock and the frames sent may be (BillingRow)."""
_END_DELAY_FRAMES = 50  # the last second heard gives the playout delay at the hang-up
_MISORDERED = (
    "duplicated",
    "reordered",
    "excess_inbound",
    "excess_outbound",
)  # agent audio this close to the hang-up may not reach the caller


@dataclass(frozen=True, slots=True)
class BillingRow:
    """One call's CDR next to what the load tester sent."""

    call_id: str
    sent_ms: int
    expected_units: int
    billed_units: int | None
    audio_ms: int
    status: str
    end_reason: str | None
    limit_ms: int | None = None
    """The call's max duration (the cap on billable audio), when known."""
    agent_started: bool | None = None
    """Whether the external agent server saw this call's ``start`` (None: no agent
    server to ask, e.g. the built-in echo)."""

    @property
    def unbilled_without_agent(self) -> bool:
        """Billed nothing, expected units, and the agent never started: no audio was
        exchanged, and the billing rule bills only calls that exchange audio
        (docs/call-engine.md, "Billing"); the caller hung up before the agent was up."""
        return self.agent_started is False and self.billed_units == 0 < self.expected_units

    @property
    def at_unit_boundary(self) -> bool:
        """Billed other units than expected, with a unit boundary within the clocks' reach.

        The gateway bills its own clock, first audio exchanged → hang-up received
        (docs/state.md); the tester expects frames sent x 20 ms. When a 30 s boundary lies
        within :data:`BOUNDARY_TOLERANCE_MS` of what was sent (a 60 s call whose hang-up
        arrived 2 ms after its last frame's slot), either side is right by its clock.
        """
        if self.billed_units is None or self.billed_units == self.expected_units:
            return False
        if abs(self.audio_ms - self.sent_ms) > BOUNDARY_TOLERANCE_MS:
            return False
        cap = self.limit_ms if self.limit_ms is not None else _LONGEST_CALL_MS
        low = billable_units(max(0, self.sent_ms - BOUNDARY_TOLERANCE_MS), cap)
        high = billable_units(self.sent_ms + BOUNDARY_TOLERANCE_MS, cap)
        return low <= self.billed_units <= high


def loss_ratio(lost: int, sent: int) -> float:
    """``lost / sent`` to 6 significant digits: never 0 when a frame was lost.

    (Rounded to 6 decimals instead, 3 frames lost of an hour's 15 M read 0.0, and the
    ``--max-loss 0`` objective passed.)
    """
    return float(f"{lost / sent:.6g}") if sent else 0.0


def machine() -> dict[str, Any]:
    """The machine the figures were measured on, and the tester's event loop."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_end": list(os.getloadavg()),
        "tester_loop": tester_loop.running(),
    }


def process_figures(
    samples: Sequence[ProcSample], window: tuple[float, float], calls: int
) -> dict[str, Any]:
    """CPU % and RSS of a process over ``window`` (monotonic), and per call."""
    if len(samples) < 2:
        return {"samples": len(samples)}
    inside = [s for s in samples if window[0] <= s.at <= window[1]]
    if len(inside) < 2:
        inside = list(samples)
    first, last = inside[0], inside[-1]
    cpu = 100 * (last.cpu_s - first.cpu_s) / max(last.at - first.at, 1e-6)
    base = samples[0].rss_bytes
    steady = max(s.rss_bytes for s in inside)
    per_call = (steady - base) / calls if calls else None
    return {
        "samples": len(samples),
        "window_s": round(last.at - first.at, 2),
        "cpu_percent": round(cpu, 1),
        "cpu_percent_per_call": round(cpu / calls, 4) if calls else None,
        "rss_mb_start": round(base / 2**20, 1),
        "rss_mb_peak": round(max(s.rss_bytes for s in samples) / 2**20, 1),
        "rss_mb_steady": round(steady / 2**20, 1),
        "rss_kb_per_call": round(per_call / 1024, 1) if per_call is not None else None,
    }


def account(raw: RawRun, billing: Sequence[BillingRow] = ()) -> dict[str, Any]:
    """The report of a run (JSON-ready)."""
    results = sorted(raw.results, key=lambda r: r.plan.index)
    answered = [r for r in results if r.answered]
    frames = Counter[str]()
    kinds = ("inbound", "outbound", "outbound_service", "connect", "jitter", *_STEADY, "wire")
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    per_carrier: dict[str, Counter[str]] = {}
    rows = {r.plan.index: _call_row(r) for r in results}
    window = _steady_window(raw, answered)
    captured = _wire_window(raw)
    for result in answered:
        counts = _account_call(result, raw, lat, rows[result.plan.index], window, captured)
        frames.update(counts)
        per_carrier.setdefault(result.plan.carrier, Counter()).update(counts)
    sent = frames["sent"]
    lost = frames["lost_inbound"] + frames["lost_outbound"] + frames["content_lost"]
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "config": {
            "calls": raw.config.calls,
            "mix": raw.config.mix,
            "ramp_per_s": raw.config.ramp,
            "hold_s": raw.config.hold_s,
            "durations_s": list(raw.config.durations),
            "workers": raw.config.workers,
            "wire_s": raw.config.wire_s,
        },
        "duration_s": round(raw.ended - raw.began, 2),
        "deadline_hit": raw.deadline_hit,
        "calls": {
            "planned": raw.config.calls,
            "played": len(results),
            "answered": len(answered),
            "completed": sum(1 for r in answered if r.completed and r.error is None),
            "failed": sum(1 for r in results if r.error),
            "refused": dict(Counter(r.refusal for r in results if r.refusal)),
            "errors": dict(Counter((r.error or "").split(":")[0] for r in results if r.error)),
            "by_carrier": dict(Counter(r.plan.carrier for r in answered)),
        },
        "frames": dict(frames) | {"loss_ratio": loss_ratio(lost, sent)},
        "latency_ms": {
            "answer": summarize(r.answer_ms for r in results if r.answer_ms is not None).as_dict(),
            "inbound": summarize(lat["inbound"]).as_dict(),
            "outbound": summarize(lat["outbound"]).as_dict(),
            "outbound_service": summarize(lat["outbound_service"]).as_dict(),
            "inbound_steady": summarize(lat["inbound_steady"]).as_dict(),
            "outbound_service_steady": summarize(lat["outbound_service_steady"]).as_dict(),
            "agent_connect": summarize(lat["connect"]).as_dict(),
            "pacing_jitter": summarize(lat["jitter"]).as_dict(),
            "tester_lateness": summarize(_chain(r.lateness_ms for r in answered)).as_dict(),
            "healthz_probe": summarize(raw.probes_ms).as_dict(),
        },
        "steady_window_s": [round(window[0] - raw.began, 3), round(window[1] - raw.began, 3)],
        "healthz_failures": raw.probe_failures,
        "gateway": process_figures(raw.gateway, window, len(answered)),
        "agent_server": process_figures(raw.agent, window, len(answered)) if raw.agent else None,
        "tester": process_figures(raw.tester, window, len(answered)),
        "host": host_figures(raw.host, window) | {"speed_probe_ms": raw.speed_probe_ms},
        "gateway_view": _gateway_view(raw),
        "gateway_answers": gateway_answers(raw),
        "wire": _wire(raw, answered, lat["wire"]),
        "per_carrier": {c: dict(v) for c, v in sorted(per_carrier.items())},
        "billing": _billing(billing),
        "machine": machine(),
        "per_call": [rows[r.plan.index] for r in results],
    }
    return report


def gateway_answers(raw: RawRun) -> dict[str, Any] | None:
    """The gateway's own answer times over the run, when both of the run's scrapes came."""
    return answer_view(*raw.run_scrapes) if len(raw.run_scrapes) == 2 else None


def _gateway_view(raw: RawRun) -> dict[str, Any] | None:
    """The gateway's own histograms over the planned steady window, when both scrapes came."""
    if len(raw.metrics_scrapes) != 2:
        return None
    (t0, before), (t1, after) = raw.metrics_scrapes
    return gateway_view(before, after, (t0 - raw.began, t1 - raw.began))


def _unix_minus_monotonic() -> float:
    """Unix time minus the monotonic clock, now (both run at one rate over a run)."""
    return time.time() - time.monotonic()


def _wire_window(raw: RawRun) -> tuple[float, float] | None:
    """The capture's seconds on the monotonic clock (its stamps are Unix time)."""
    if raw.wire is None or "began" not in raw.wire.counts:
        return None
    began = raw.wire.counts["began"] - _unix_minus_monotonic()
    return began, began + raw.wire.seconds


def _wire(
    raw: RawRun, answered: Sequence[CallResult], end_to_end: Sequence[float]
) -> dict[str, Any] | None:
    """The loopback capture's figures (``--wire``), when one ran, and beside them the
    tester's end-to-end figure of the frames sent in the same seconds."""
    if raw.wire is None:
        return None
    calls = []
    for result in answered:
        record = raw.agent_calls.get(call_id_for(result.plan.carrier, result.carrier_call_id))
        peer = record.get("peer_port") if record else None
        calls.append((result.local_port, peer, result.plan.carrier == "vonage"))
    return wire_figures(raw.wire, calls) | {"end_to_end_in": summarize(end_to_end).as_dict()}


def _call_row(result: CallResult) -> dict[str, Any]:
    return {
        "index": result.plan.index,
        "carrier": result.plan.carrier,
        "carrier_call_id": result.carrier_call_id,
        "call_id": call_id_for(result.plan.carrier, result.carrier_call_id),
        "planned_s": round(result.plan.duration_s, 3),
        "frames_sent": len(result.sent_at),
        "frames_received": sum(n for _, n in result.received) // max(result.frame_samples, 1),
        "answer_ms": None if result.answer_ms is None else round(result.answer_ms, 3),
        "refusal": result.refusal,
        "error": result.error,
        "completed": result.completed,
        "close_code": result.close_code,
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _chain(parts: Iterable[Sequence[float]]) -> list[float]:
    return [v for part in parts for v in part]


def _within(
    window: tuple[float, float], sent_at: Sequence[float], values: Sequence[float]
) -> list[float]:
    """The ``values`` whose frame was sent inside ``window`` (aligned with ``sent_at``)."""
    start, end = window
    return [v for at, v in zip(sent_at, values, strict=True) if start <= at <= end]


def _steady_window(raw: RawRun, answered: Sequence[CallResult]) -> tuple[float, float]:
    """From the last call's start (+1 s) to the first hang-up (-0.5 s): all calls live."""
    ends = [r.ended_at for r in answered if r.ended_at is not None]
    start, end = raw.ramp_end + 1.0, (min(ends) if ends else raw.ended) - 0.5
    return (start, end) if end - start >= 1.0 else (raw.began, raw.ended)


def _account_call(
    result: CallResult,
    raw: RawRun,
    lat: dict[str, list[float]],
    row: dict[str, Any],
    window: tuple[float, float],
    captured: tuple[float, float] | None = None,
) -> Counter[str]:
    carrier = result.plan.carrier
    fmt = CARRIER_FORMATS[carrier]
    counts = Counter[str](
        calls=1,
        sent=len(result.sent_at),
        received_by_carrier=sum(n for _, n in result.received) // result.frame_samples,
        clears=result.clears,
        marks=result.marks,
    )
    lat["jitter"].extend(pacing_jitter([t for t, _ in result.received]))
    record = raw.agent_calls.get(call_id_for(carrier, result.carrier_call_id))
    timing = record.get("timing") if record else None
    if not timing or result.opened_at is None:
        return counts
    start_at = float(timing["start_at"])
    lat["connect"].append((start_at - result.opened_at) * 1000)
    row["agent_connect_ms"] = round(lat["connect"][-1], 3)
    ended = result.ended_at or math.inf
    inbound = match_stream(
        [(t, result.frame_samples) for t in result.sent_at],
        [(t, b // 2) for t, b in zip(timing["in_at"], timing["in_bytes"], strict=True)],
        ratio=_AGENT_RATE / fmt.sample_rate,
        frame_samples=result.frame_samples,
        count_from=start_at + _SETTLE_S,
        count_until=ended,
    )
    agent_frame = _AGENT_RATE // 50
    agent_sent = [(t, b // 2) for t, b in zip(timing["out_at"], timing["out_bytes"], strict=True)]
    ratio = fmt.sample_rate / _AGENT_RATE
    outbound = match_stream(
        agent_sent,
        result.received,
        ratio=ratio,
        frame_samples=agent_frame,
        count_from=start_at + _SETTLE_S,
        count_until=ended - _IN_FLIGHT_S,
        receiver_rate=fmt.sample_rate,
        lead_frames=raw.pacer_lead,
    )
    if outbound.latencies_ms:
        # Audio waiting in the gateway's playout queue when the caller hangs up is never
        # played, by design: frames are due at the carrier only if sent at least the
        # outbound delay *at the end of the call* before the hang-up, plus the margin.
        # The end, not the call's median: with an agent that never pauses (the probe) the
        # queue grows at every underrun and stays. The last frame's delay when it is
        # larger: a burst (the agent caught up after a stall) is still being played out
        # at the hang-up, and the last second's median does not see it yet. A stall
        # before the end still counts: what was sent before it and never heard is lost.
        latencies = outbound.latencies_ms
        queued_ms = max(summarize(latencies[-_END_DELAY_FRAMES:]).p50 or 0.0, latencies[-1])
        lost = match_stream(
            agent_sent,
            result.received,
            ratio=ratio,
            frame_samples=agent_frame,
            count_until=ended - _IN_FLIGHT_S - queued_ms / 1000,
        ).lost_frames
        outbound = replace(outbound, lost_frames=lost)
        row["playout_allowance_ms"] = round(queued_ms, 1)
    _end_row(result, row)
    lat["inbound"].extend(inbound.latencies_ms)
    lat["outbound"].extend(outbound.latencies_ms)
    lat["outbound_service"].extend(outbound.service_ms)
    lat["inbound_steady"].extend(_within(window, inbound.sent_at, inbound.latencies_ms))
    if captured is not None:
        lat["wire"].extend(_within(captured, inbound.sent_at, inbound.latencies_ms))
    lat["outbound_service_steady"].extend(_within(window, outbound.sent_at, outbound.service_ms))
    for name, match in (("inbound", inbound), ("outbound", outbound)):
        figures = summarize(match.latencies_ms)
        row[f"{name}_ms"] = {"p50": _r(figures.p50), "p99": _r(figures.p99), "max": _r(figures.max)}
        row[f"lost_{name}"] = match.lost_frames
    counts.update(
        received_by_agent=inbound.received_frames,
        lost_inbound=inbound.lost_frames,
        excess_inbound=inbound.excess_frames,
        sent_by_agent=len(timing["out_at"]),
        lost_outbound=outbound.lost_frames,
        excess_outbound=outbound.excess_frames,
    )
    if record and record.get("mode") == "probe" and result.heard:
        counts.update(_content(result, fmt))
    return counts


def _end_row(result: CallResult, row: dict[str, Any]) -> None:
    """When the call hung up (Unix time, to find it in the gateway's log), and the tail
    gap: how long before the hang-up the carrier side last heard a gateway frame. A gap
    far beyond 20 ms while the agent talked means the gateway did not send at the end (a
    host stall shows as one: the audio was still in its socket when the caller left)."""
    if result.ended_at is None:
        return
    row["ended_unix"] = round(result.ended_at + _unix_minus_monotonic(), 3)
    if result.received:
        row["tail_gap_ms"] = round((result.ended_at - result.received[-1][0]) * 1000, 1)


def _content(result: CallResult, fmt: Any) -> dict[str, int]:
    from loadtest.audio import carrier_audio, load_fixture

    audio = carrier_audio(result.plan.carrier, load_fixture())
    sent = b"".join(audio.frame(k) for k in range(len(result.sent_at)))
    check = content_check(to_pcm8k(sent, fmt), to_pcm8k(bytes(result.heard), fmt), 160)
    return {
        "content_checked": check.checked,
        "content_in_place": check.in_place,
        "duplicated": check.duplicated,
        "reordered": check.reordered,
        "content_lost": check.lost,
        "content_unidentified": check.unidentified,
    }


def _billing(rows: Sequence[BillingRow]) -> dict[str, Any]:
    if not rows:
        return {"checked": 0}
    differ = [r for r in rows if r.billed_units != r.expected_units]
    boundary = sum(1 for r in differ if r.at_unit_boundary)
    without_agent = sum(1 for r in differ if r.unbilled_without_agent and not r.at_unit_boundary)
    return {
        "checked": len(rows),
        "mismatched": len(differ) - boundary - without_agent,
        "at_unit_boundary": boundary,
        "unbilled_without_agent": without_agent,
        "not_final": sum(1 for r in rows if r.status == "live"),
        "differing": [_differing(r) for r in differ][:DIFFERING_ROWS],
        "audio_minus_sent_ms": summarize(r.audio_ms - r.sent_ms for r in rows).as_dict(),
        "end_reasons": dict(Counter(r.end_reason or "" for r in rows)),
    }


def _differing(row: BillingRow) -> dict[str, Any]:
    """A CDR whose units differ from the expected ones, and how the report counted it."""
    kind = "mismatched"
    if row.at_unit_boundary:
        kind = "at_unit_boundary"
    elif row.unbilled_without_agent:
        kind = "unbilled_without_agent"
    return {
        "call_id": row.call_id,
        "counted_as": kind,
        "sent_ms": row.sent_ms,
        "audio_ms": row.audio_ms,
        "expected_units": row.expected_units,
        "billed_units": row.billed_units,
        "status": row.status,
        "end_reason": row.end_reason,
    }


async def check_billing(
    database_url: str,
    results: Sequence[CallResult],
    wait_s: float = 20.0,
    *,
    agent_calls: Mapping[str, Any] | None = None,
) -> list[BillingRow]:
    """Each answered call's CDR from the gateway's database, once final (bounded wait).

    The expected units are computed from what the load tester sent alone: frames sent
    x 20 ms, in 30 s units (docs/state.md metering), capped at the agent's limit.
    ``agent_calls`` (the external agent server's records by call id, when one ran) tells
    which calls the agent never saw start (:attr:`BillingRow.unbilled_without_agent`).
    """
    from gateway.errors import NotFoundError
    from gateway.store.ledger import Ledger
    from gateway.store.sql.engine import create_engine

    engine = create_engine(database_url)
    rows: list[BillingRow] = []
    try:
        ledger = Ledger(engine)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        for result in (r for r in results if r.answered):
            call_id = call_id_for(result.plan.carrier, result.carrier_call_id)
            while True:
                try:
                    record = await ledger.get_call(call_id)
                except NotFoundError:
                    record = None
                if record is not None and (record.final or loop.time() > deadline):
                    break
                if record is None and loop.time() > deadline:
                    break
                await asyncio.sleep(0.1)
            if record is None:
                continue
            sent_ms = round(len(result.sent_at) * FRAME_S * 1000)
            rows.append(
                BillingRow(
                    call_id=call_id,
                    sent_ms=sent_ms,
                    expected_units=billable_units(sent_ms, record.max_call_duration_s * 1000),
                    billed_units=record.billable_units,
                    audio_ms=record.audio_ms,
                    status=str(record.status),
                    end_reason=record.end_reason,
                    limit_ms=record.max_call_duration_s * 1000,
                    agent_started=None if agent_calls is None else call_id in agent_calls,
                )
            )
    finally:
        await engine.dispose()
    return rows


@dataclass(frozen=True, slots=True)
class Objective:
    """A stated limit and whether the run met it."""

    name: str
    limit: float
    value: float | None
    ok: bool


def objectives(report: Mapping[str, Any], limits: Mapping[str, float | None]) -> list[Objective]:
    """Compare ``report`` with ``limits`` (None: not stated). Known limits:

    ``max_p99_ms`` (inbound and outbound-service p99: the gateway's work, see
    :class:`~loadtest.accounting.StreamMatch`), ``max_queue_p99_ms`` (outbound p99 with
    the playout queue), ``max_loss`` (loss ratio),
    ``max_misordered`` (frames duplicated, reordered or in excess, count),
    ``max_refusals`` (count), ``max_failed`` (count), ``max_answer_p99_ms``,
    ``max_jitter_p99_ms``, ``max_billing_mismatches``, ``max_wire_p50_ms`` and
    ``max_wire_p99_ms`` (carrier → agent by kernel timestamps, ``--wire``). A latency
    that was not measured (no external agent, no capture) does not meet a latency
    objective.
    """
    latency = report["latency_ms"]
    calls = report["calls"]
    values: dict[str, float | None] = {
        "max_p99_ms": _max_or_none(latency["inbound"]["p99"], latency["outbound_service"]["p99"]),
        "max_queue_p99_ms": latency["outbound"]["p99"],
        "max_loss": float(report["frames"].get("loss_ratio", 0.0)),
        "max_misordered": float(sum(report["frames"].get(k, 0) for k in _MISORDERED)),
        "max_refusals": float(sum(calls["refused"].values())),
        "max_failed": float(calls["failed"]),
        "max_answer_p99_ms": latency["answer"]["p99"],
        "max_jitter_p99_ms": latency["pacing_jitter"]["p99"],
        "max_billing_mismatches": float(report["billing"].get("mismatched", 0)),
        "max_wire_p50_ms": wire_in(report, "p50"),
        "max_wire_p99_ms": wire_in(report, "p99"),
    }
    out = []
    for name, limit in limits.items():
        if limit is None:
            continue
        if name not in values:
            raise ValueError(f"unknown objective {name!r}; expected one of {sorted(values)}")
        value = values[name]
        out.append(Objective(name, limit, value, value is not None and value <= limit))
    return out


def wire_in(report: Mapping[str, Any], key: str) -> float | None:
    """A percentile of the loopback capture's carrier → agent figure (None: no ``--wire``)."""
    wire = report.get("wire")
    return None if not wire else wire["in"].get(key)


def _max_or_none(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if len(known) == len(values) else None


async def billed_report(database_url: str | None, raw: RawRun) -> dict[str, Any]:
    """The report of :func:`account` for ``raw``, every answered call's CDR checked when
    there is a gateway database to read."""
    if not database_url:
        return account(raw, [])
    agents = raw.agent_calls or None  # empty: no agent server ran (or it answered nothing)
    return account(raw, await check_billing(database_url, raw.results, agent_calls=agents))
