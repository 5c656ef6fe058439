"""Billing rules (gateway.metering): examples from the spec, then properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.errors import ValidationError
from gateway.metering import (
    RATE_PER_MINUTE_MICROS,
    UNIT_MS,
    AudioMeter,
    Role,
    billable_units,
    charge,
    cost_micros,
    micros_to_usd,
    usd_to_micros,
)

MAX_MS = 7_200_000
durations = st.integers(min_value=0, max_value=10 * MAX_MS)
max_durations = st.integers(min_value=30, max_value=7200).map(lambda s: s * 1000)
roles = st.sampled_from(list(Role))


@pytest.mark.parametrize(
    ("audio_ms", "units"),
    [
        (0, 0),
        (1, 1),
        (20_000, 1),  # "a 20 s call costs half a minute"
        (29_999, 1),
        (30_000, 1),
        (30_001, 2),
        (31_000, 2),  # 31 s -> 60 s
        (60_000, 2),
        (600_000, 20),
    ],
)
def test_units_of_30_seconds_rounded_up(audio_ms: int, units: int) -> None:
    assert billable_units(audio_ms, MAX_MS) == units


def test_units_are_capped_by_the_max_duration() -> None:
    assert billable_units(10_000_000, 600_000) == 20
    assert billable_units(45_000, 30_000) == 1  # a 30 s cap bills one unit at most


@pytest.mark.parametrize(
    ("role", "per_minute_usd"),
    [("operator", "0.05"), ("specialist", "0.10"), ("executive", "0.25"), ("concierge", "0.40")],
)
def test_rates_per_minute_and_cost_per_unit_are_half(role: str, per_minute_usd: str) -> None:
    assert micros_to_usd(RATE_PER_MINUTE_MICROS[Role(role)]) == Decimal(per_minute_usd)
    assert micros_to_usd(cost_micros(2, Role(role))) == Decimal(per_minute_usd)
    assert micros_to_usd(cost_micros(1, Role(role))) * 2 == Decimal(per_minute_usd)


def test_charge_bundles_units_and_cost() -> None:
    result = charge(145_000, 600_000, Role.CONCIERGE)
    assert (result.audio_ms, result.units, result.cost_micros) == (145_000, 5, 1_000_000)
    assert result.role is Role.CONCIERGE


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: billable_units(-1, MAX_MS), "audio_ms"),
        (lambda: billable_units(1.5, MAX_MS), "audio_ms"),  # type: ignore[arg-type]
        (lambda: billable_units(True, MAX_MS), "audio_ms"),
        (lambda: billable_units(1, 0), "max_duration_ms"),
        (lambda: cost_micros(-1, Role.OPERATOR), "units"),
    ],
)
def test_bad_inputs_are_validation_errors(call: object, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        call()  # type: ignore[operator]
    assert info.value.field == field


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="manager"):
        cost_micros(1, "manager")  # type: ignore[arg-type]


@given(durations, max_durations)
@settings(max_examples=300)
@example(0, 30_000)
@example(1, 30_000)
def test_units_cover_the_audio_with_less_than_one_unit_to_spare(audio: int, cap: int) -> None:
    units = billable_units(audio, cap)
    billed_ms = min(audio, cap)
    assert units * UNIT_MS >= billed_ms
    assert (units - 1) * UNIT_MS < billed_ms or units == 0
    assert (units == 0) == (audio == 0)
    assert units <= -(-cap // UNIT_MS)


@given(durations, durations, max_durations)
@settings(max_examples=200)
def test_more_audio_never_bills_less(a: int, b: int, cap: int) -> None:
    low, high = sorted((a, b))
    assert billable_units(low, cap) <= billable_units(high, cap)


@given(st.integers(min_value=0, max_value=10_000), roles)
@settings(max_examples=200)
def test_cost_is_exact_integer_micros(units: int, role: Role) -> None:
    cost = cost_micros(units, role)
    assert isinstance(cost, int)
    assert cost * 2 == units * RATE_PER_MINUTE_MICROS[role]
    assert micros_to_usd(cost) == Decimal(units) * micros_to_usd(RATE_PER_MINUTE_MICROS[role]) / 2


@given(st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False))
@settings(max_examples=200)
def test_dollar_amounts_round_trip_through_micros(amount: Decimal) -> None:
    assert micros_to_usd(usd_to_micros(str(amount))) == amount


@pytest.mark.parametrize("text", ["abc", "1.0000001", "NaN", "Infinity", ""])
def test_bad_dollar_amounts_are_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="amount"):
        usd_to_micros(text)


def test_meter_counts_from_the_first_audio_to_now() -> None:
    meter = AudioMeter()
    assert meter.audio_ms(5_000) == 0
    assert not meter.checkpoint_due(5_000, 5_000)
    meter.audio(10_000)
    meter.audio(12_000)  # later audio does not move the start
    assert meter.audio_ms(40_001) == 30_001
    assert meter.checkpoint_due(10_000, 5_000)
    assert meter.checkpoint(15_000) == 5_000
    assert not meter.checkpoint_due(19_999, 5_000)
    assert meter.checkpoint_due(20_000, 5_000)


@given(st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=50))
@settings(max_examples=100)
def test_meter_checkpoints_never_decrease(times: list[int]) -> None:
    meter = AudioMeter()
    meter.audio(min(times))
    readings = [meter.checkpoint(t) for t in sorted(times)]
    assert readings == sorted(readings)
    assert readings[-1] == max(times) - min(times)


def test_meter_bills_the_shorter_of_the_gateway_and_the_media_clock() -> None:
    meter = AudioMeter()
    meter.audio(10_000, media_ms=400)  # 400 ms of caller audio came before the first
    # The hang-up was read 230 ms late (the gateway was not scheduled): the carrier
    # streamed 60 s of caller audio meanwhile, and that is what bills.
    assert meter.audio_ms(70_230, media_ms=60_400) == 60_000
    # Caller audio that arrived in a burst ahead of the clock bills no more than the clock.
    assert meter.audio_ms(12_000, media_ms=3_000) == 2_000
    assert meter.audio_ms(12_000) == 2_000  # no media clock given: the gateway's alone


@given(st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 10**4)), min_size=1, max_size=50))
@settings(max_examples=100)
def test_meter_readings_on_two_clocks_never_decrease_or_exceed_either(
    steps: list[tuple[int, int]],
) -> None:
    meter = AudioMeter()
    now, media = 1_000, 0
    meter.audio(now, media)
    readings = []
    for clock_step, media_step in steps:
        now, media = now + clock_step, media + media_step
        reading = meter.checkpoint(now, media)
        assert reading == min(now - 1_000, media)
        readings.append(reading)
    assert readings == sorted(readings)
