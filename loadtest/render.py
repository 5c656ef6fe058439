"""The report for people: the final table (rich) and the optional PNG plot (matplotlib).

matplotlib is an optional extra (``pip install 'rymi-gateway[plot]'``); asking for a
plot without it is a clear error, not a crash at import.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loadtest.report import Objective

__all__ = [
    "mark",
    "plot_levels",
    "print_compare",
    "print_levels",
    "print_report",
    "print_soak",
]


def mark(ok: bool) -> str:
    """A verdict for the terminal: green ``ok`` or red ``FAILED``."""
    return "[green]ok[/]" if ok else "[red]FAILED[/]"


_LATENCIES = (
    ("answer", "answer (HTTP)"),
    ("inbound", "added: carrier → agent"),
    ("inbound_steady", "  … all calls up"),
    ("outbound_service", "added: agent → carrier"),
    ("outbound_service_steady", "  … all calls up"),
    ("outbound", "  … with playout queue"),
    ("pacing_jitter", "pacing jitter |Δ-20ms|"),
    ("agent_connect", "agent connect"),
    ("healthz_probe", "/healthz probe (loop lag)"),
    ("tester_lateness", "tester send lateness"),
)


_LOST_LINES = 10  # calls that lost agent audio, listed one by one


def print_report(
    console: Console, report: Mapping[str, Any], checks: Sequence[Objective] = ()
) -> None:
    """Latency percentiles, frames, calls, processes and objectives."""
    table = Table(title="latency (ms)", title_justify="left")
    table.add_column("what")
    for column in ("count", "p50", "p90", "p99", "p99.9", "max"):
        table.add_column(column, justify="right")
    for key, label in _LATENCIES:
        row = report["latency_ms"].get(key)
        if row is None:
            continue  # (a soak's report has no steady window of its own: each batch is one)
        cells = [_fmt(row[c]) for c in ("p50", "p90", "p99", "p99.9", "max")]
        table.add_row(label, str(row["count"]), *cells)
    console.print(table)
    calls = report["calls"]
    console.print(
        f"calls: {calls['answered']}/{calls['planned']} answered, {calls['completed']} "
        f"completed, {calls['failed']} failed, refused {calls['refused'] or 0}"
        + (f", errors {calls['errors']}" if calls["errors"] else "")
    )
    frames = report["frames"]
    console.print(
        "frames: "
        + ", ".join(f"{k} {v}" for k, v in sorted(frames.items()) if k != "loss_ratio")
        + f"; loss ratio {frames['loss_ratio']}"
    )
    for name in ("gateway", "agent_server", "tester"):
        proc = report.get(name)
        if proc and "cpu_percent" in proc:
            console.print(
                f"{name}: CPU {proc['cpu_percent']}% ({proc['cpu_percent_per_call']}%/call) "
                f"over {proc['window_s']} s, RSS {proc['rss_mb_start']} → "
                f"{proc['rss_mb_peak']} MB ({proc['rss_kb_per_call']} kB/call)"
            )
    host = report.get("host")
    if host and host.get("steal_percent") is not None:
        console.print(_host_line(host))
    view = report.get("gateway_view")
    if view:
        console.print(_view_line(view))
    answers = report.get("gateway_answers")
    if answers and answers["observed"]:
        console.print(
            f"gateway's own answer time: p50 {answers['p50_ms']} / p90 {answers['p90_ms']} / "
            f"p99 {answers['p99_ms']} ms of {answers['observed']} calls answered"
        )
    wire = report.get("wire")
    if wire:
        console.print(_wire_line(wire))
    billing = report["billing"]
    if billing.get("checked"):
        console.print(
            f"billing: {billing['checked']} CDRs, {billing['mismatched']} mismatched units, "
            f"audio - sent ms {billing['audio_minus_sent_ms']}"
        )
        if billing.get("unbilled_without_agent"):
            console.print(
                f"billing: {billing['unbilled_without_agent']} calls billed nothing: the caller"
                " hung up before the agent started (no audio exchanged, not a mismatch)"
            )
    for row in billing.get("differing", ()):
        if row["counted_as"] == "mismatched":
            console.print(
                f"billing: {row['call_id']} billed {row['billed_units']} units for "
                f"{row['audio_ms']} ms ({row['status']}, {row['end_reason']}); sent "
                f"{row['sent_ms']} ms = {row['expected_units']} units"
            )
    losing = [row for row in report.get("per_call", ()) if row.get("lost_outbound")]
    for row in losing[:_LOST_LINES]:
        console.print(_lost_line(row))
    if len(losing) > _LOST_LINES:
        console.print(f"lost: {len(losing) - _LOST_LINES} more calls lost agent frames")
    for check in checks:
        mark = "[green]ok[/]" if check.ok else "[red]MISSED[/]"
        console.print(f"objective {check.name} ≤ {check.limit}: {_fmt(check.value)} {mark}")


def _lost_line(row: Mapping[str, Any]) -> str:
    """A call that lost agent audio: when it hung up and what the carrier heard last."""
    ended = row.get("ended_unix")
    when = time.strftime("%H:%M:%S", time.gmtime(ended)) + " UTC" if ended else "?"
    return (
        f"lost: call {row['call_id']} lost {row['lost_outbound']} agent frames; hung up "
        f"at {when}, {_fmt(row.get('tail_gap_ms'))} ms after the last frame heard "
        f"(playout allowance {_fmt(row.get('playout_allowance_ms'))} ms)"
    )


def _shares(figures: Mapping[str, Any]) -> str:
    """The shares within the goal's bounds, e.g. ``99.1% ≤ 0.5 ms, 99.9% ≤ 2 ms``."""
    return ", ".join(
        f"{100 * figures[key]:.1f}% ≤ {key[7:-3]} ms"
        for key in ("within_0.5_ms", "within_2_ms")
        if figures.get(key) is not None
    )


def _wire_line(wire: Mapping[str, Any]) -> str:
    """The loopback capture's carrier → agent figure (kernel timestamps on both ends)."""
    figures, capture = wire["in"], wire["capture"]
    shares = _shares(figures)
    return (
        f"on the wire ({wire['seconds']:g} s captured, {wire['calls_paired']} calls paired"
        f", {wire['calls_unpaired']} not): carrier → agent p50 {_fmt(figures['p50'])} / p99 "
        f"{_fmt(figures['p99'])} / p99.9 {_fmt(figures['p99.9'])} ms over {figures['count']} "
        f"frames ({shares}); capture dropped {capture.get('dropped', 0)} packets"
        + _same_seconds(wire.get("end_to_end_in"))
    )


def _same_seconds(figures: Mapping[str, Any] | None) -> str:
    """The tester's end-to-end figure of the frames sent while the capture ran."""
    if not figures or not figures.get("count"):
        return ""
    return (
        f"; end to end, same seconds: p50 {_fmt(figures['p50'])} / p99 {_fmt(figures['p99'])}"
        f" / p99.9 {_fmt(figures['p99.9'])} ms"
    )


def _view_line(view: Mapping[str, Any]) -> str:
    """The gateway's own added latency while all calls were up (its sampled histograms)."""
    parts = []
    for direction in ("in", "out"):
        figures = view[f"added_{direction}"]
        if not figures["observed"]:
            continue
        shares = _shares(figures)
        # Out counts from audio reaching an idle pacer to its send: the wait for the
        # frame's 20 ms slot is in it (docs/operations.md), so it is no service latency.
        name = direction if direction == "in" else "out (slot wait included)"
        parts.append(
            f"{name} p50 {_fmt(figures['p50_ms'])} / p99 {_fmt(figures['p99_ms'])} ms"
            + (f" ({shares})" if shares else "")
        )
    lag = view["loop_lag"]
    if lag["observed"]:
        parts.append(f"loop lag p99 {_fmt(lag['p99_ms'])} ms")
    return "gateway's own view, all calls up: " + ("; ".join(parts) or "no observations")


def _host_line(host: Mapping[str, Any]) -> str:
    """Steal per CPU over the window and the speed probe: how busy the host itself was."""
    by_cpu = ", ".join(f"cpu{c} {v}%" for c, v in host["steal_percent_by_cpu"].items())
    line = f"host: steal {host['steal_percent']}%" + (f" ({by_cpu})" if by_cpu else "")
    line += f" over {host['window_s']} s"
    speed = host.get("speed_probe_ms")
    if speed:
        line += f", speed probe {speed[0]:g} → {speed[1]:g} ms (lower is faster)"
    return line


def print_soak(console: Console, report: Mapping[str, Any]) -> None:
    """The soak's load and its RSS drift line (after :func:`print_report`)."""
    soak, calls = report["soak"], report["calls"]
    console.print(
        f"soak: {soak['calls']} calls live for {soak['duration_s']:g} s, {calls['played']} "
        f"calls of ~{soak['call_s']:g} s played, {report['billing']['checked']} billed and checked"
    )
    steal = soak.get("host_steal_by_minute") or []
    if steal:
        worst_at, worst = max(steal, key=lambda point: point[1])
        console.print(f"host steal: worst minute {worst:g}% (ending {worst_at:g} s in)")
    if soak["rss_drift"] is None:
        console.print("RSS drift: not measured (no gateway RSS sample after the warm-up)")
        return
    (b0, b1), (e0, e1) = soak["baseline_window_s"], soak["end_window_s"]
    console.print(
        f"RSS drift: {100 * soak['rss_drift']:+.2f} %: {soak['rss_mb_baseline']} MB after the "
        f"{soak['warmup_s']:g} s warm-up (median of samples at {b0:g}-{b1:g} s) → "
        f"{soak['rss_mb_end']} MB at the end ({e0:g}-{e1:g} s)"
    )


def print_levels(console: Console, levels: Sequence[Mapping[str, Any]]) -> None:
    """The capacity search's steps."""
    table = Table(title="capacity search", title_justify="left")
    for column in ("calls", "clean", "in p99", "out p99", "all up: in/out p99", "gw's own in p99"):
        table.add_column(column, justify="right")
    wire = any(level.get("wire_in_p99_ms") is not None for level in levels)
    if wire:
        table.add_column("wire in p50 / p99", justify="right")
    for column in ("queue p99",):
        table.add_column(column, justify="right")
    for column in ("jitter p99", "probe p99"):
        table.add_column(column, justify="right")
    for column in ("lost",):
        table.add_column(column, justify="right")
    for column in ("CPU %", "CPU %/call", "kB/call", "steal %", "why"):
        table.add_column(column, justify="right")
    for level in levels:
        table.add_row(
            str(level["calls"]),
            "yes" if level["clean"] else "no",
            _fmt(level["inbound_p99_ms"]),
            _fmt(level["outbound_p99_ms"]),
            f"{_fmt(level['inbound_steady_p99_ms'])} / {_fmt(level['outbound_steady_p99_ms'])}",
            _fmt(level.get("gateway_in_p99_ms")),
            *([_pair_ms(level.get("wire_in_p50_ms"), level.get("wire_in_p99_ms"))] * wire),
            _fmt(level["queue_p99_ms"]),
            _fmt(level["jitter_p99_ms"]),
            _fmt(level["probe_p99_ms"]),
            str(level["lost_frames"]),
            _fmt(level["cpu_percent"]),
            _fmt(level["cpu_percent_per_call"]),
            _fmt(level["rss_kb_per_call"]),
            _fmt(level.get("steal_percent")),
            ", ".join(level["reasons"]),
        )
    console.print(table)


def _pair_ms(first: float | None, second: float | None) -> str:
    return f"{_fmt(first)} / {_fmt(second)}"


def print_compare(console: Console, doc: Mapping[str, Any]) -> None:
    """``compare``: one row per variant (median over rounds, min-max), then what ran."""
    rounds = doc["config"]["rounds"]
    table = Table(title=f"gateway variants, median of {rounds} round(s)", title_justify="left")
    table.add_column("variant")
    for column in ("CPU %", "CPU %/call", "calls/core", "CPU/call ratio"):
        table.add_column(column, justify="right")
    for column in ("in p50/p99", "out p50/p99", "jitter p99", "lost", "kB/call", "steal %"):
        table.add_column(column, justify="right")
    table.add_column("ok", justify="right")
    for variant in doc["variants"]:
        row = doc["aggregate"][variant["name"]]
        table.add_row(
            variant["name"],
            _spread(row["cpu_percent"]),
            _spread(row["cpu_percent_per_call"]),
            _fmt(row["calls_per_core"]),
            _fmt(row["cpu_per_call_ratio"]),
            _pair(row["inbound_p50_ms"], row["inbound_p99_ms"]),
            _pair(row["outbound_service_p50_ms"], row["outbound_service_p99_ms"]),
            _fmt(row["jitter_p99_ms"]["median"]),
            str(row["frames_lost"]),
            _fmt(row["rss_kb_per_call"]["median"]),
            _spread(row["host_steal_percent"]),
            mark(row["ok"]),
        )
    console.print(table)
    console.print(
        "latencies: gateway-added ms, external agent only (in: carrier → agent, out: agent →"
        " carrier beyond pacing); CPU % of one core; CPU/call ratio: against the first variant"
    )
    for variant in doc["variants"]:
        console.print(_what_ran(variant, doc["runs"]), markup=False)


def _what_ran(variant: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> str:
    code = variant["gateway"]
    where = code["module"] or "gateway not importable"
    if code["commit"]:
        where += f" @ {code['commit']}" + (" (modified)" if code["dirty"] else "")
    mine = [r for r in runs if r["variant"] == variant["name"]]
    loops = sorted({r["gateway_loop"] or "not in its log" for r in mine})
    env = " ".join(f"{k}={v}" for k, v in variant["env"].items())
    return (
        f"{variant['name']}: {variant['python'] or 'this interpreter'} → {where};"
        f" event loop {'/'.join(loops)}" + (f"; {env}" if env else "")
    )


def _spread(spread: Mapping[str, Any]) -> str:
    median, low, high = spread["median"], spread["min"], spread["max"]
    if median is None:
        return "—"
    if spread["rounds"] < 2 or low == high:
        return _fmt(median)
    return f"{_fmt(median)} ({_fmt(low)}-{_fmt(high)})"


def _pair(p50: Mapping[str, Any], p99: Mapping[str, Any]) -> str:
    if p50["median"] is None and p99["median"] is None:
        return "—"
    return f"{_fmt(p50['median'])} / {_fmt(p99['median'])}"


def plot_levels(path: Path, levels: Sequence[Mapping[str, Any]], title: str) -> None:
    """Latency p99 and CPU against concurrency, as a PNG.

    Raises:
        RuntimeError: matplotlib (the ``plot`` extra) is not installed.
    """
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'rymi-gateway[plot]'") from None
    calls = [level["calls"] for level in levels]
    fig, left = plt.subplots(figsize=(8, 4.5))
    for key, label in (
        ("inbound_p99_ms", "carrier→agent p99"),
        ("outbound_p99_ms", "agent→carrier p99"),
        ("jitter_p99_ms", "pacing jitter p99"),
    ):
        values = [level[key] if level[key] is not None else float("nan") for level in levels]
        left.plot(calls, values, marker="o", label=label)
    left.set_xlabel("concurrent calls")
    left.set_ylabel("ms")
    right = left.twinx()
    right.plot(
        calls,
        [level["cpu_percent"] or 0 for level in levels],
        "k--",
        marker="s",
        label="gateway CPU %",
    )
    right.set_ylabel("gateway CPU % (100 = one core)")
    left.legend(loc="upper left")
    right.legend(loc="lower right")
    left.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:g}" if isinstance(value, int) else f"{value:.3g}"
