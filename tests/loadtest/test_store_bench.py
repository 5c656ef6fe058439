"""``python -m loadtest.store_bench``: every operation of a call's life is run and timed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.store.models import CallStatus
from gateway.store.sql_state import SqlState
from loadtest import store_bench

OPERATIONS = [
    "resolve_number",
    "carrier_credentials",
    "balance_micros",
    "open_call",
    "get_call",
    "get_agent",
    "agent_pipeline_secret",
    "media_started",
    "finalize",
]


async def test_each_operation_runs_and_the_calls_it_opened_are_billed(tmp_path: Path) -> None:
    settings = Settings.from_env({"RYMI_DATA_DIR": str(tmp_path)})
    figures = await store_bench.measure(settings, repeat=3)
    assert [f.name for f in figures] == OPERATIONS
    assert all(f.cpu_us > 0 and f.wall_us > 0 for f in figures)
    credentials = next(f.cpu_us for f in figures if f.name == "carrier_credentials")
    others = sum(f.cpu_us for f in figures if f.name != "carrier_credentials")
    assert store_bench.total_cpu_us(figures) == pytest.approx(others + 3 * credentials)
    state = await SqlState.open(settings)
    try:
        tenant = (await state.directory.list_tenants())[0]
        calls = await state.ledger.list_calls(tenant.id)
    finally:
        await state.close()
    # 3 timed calls and the warm-up's: opened, started, finalized and billed once each.
    assert len(calls) == 4
    assert all(c.status is CallStatus.COMPLETED and c.media_started_at_ms for c in calls)
    assert all(c.billable_units == 2 for c in calls)  # 31 s of audio: two 30 s units


def test_main_prints_a_line_per_operation_and_the_call_total(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert store_bench.main(["--repeat", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("2 of each")
    rows = [line.split("|")[1].strip() for line in out[4:]]
    assert rows == [*OPERATIONS, "one call (credentials x3)"]
