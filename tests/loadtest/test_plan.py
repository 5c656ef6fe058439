"""Carrier mixes and call plans."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from loadtest.run import RunConfig, parse_mix, plan_calls


def test_mix_weights_and_bare_names() -> None:
    assert parse_mix("twilio=50,plivo=25, vonage=25") == {"twilio": 50, "plivo": 25, "vonage": 25}
    assert parse_mix("Twilio,vonage") == {"twilio": 1, "vonage": 1}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("skype=1", "twilio, plivo or vonage"),
        ("twilio=0", "positive"),
        ("twilio=x", "positive"),
        ("twilio,twilio", "twice"),
        (" , ", "at least one"),
    ],
)
def test_bad_mixes_are_refused(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_mix(text)


def test_plan_interleaves_the_mix_along_the_ramp() -> None:
    plans = plan_calls(RunConfig(calls=8, mix={"twilio": 2, "plivo": 1, "vonage": 1}, ramp=4.0))
    assert Counter(p.carrier for p in plans) == {"twilio": 4, "plivo": 2, "vonage": 2}
    assert {p.carrier for p in plans[:4]} == {"twilio", "plivo", "vonage"}  # every prefix mixes
    assert [p.start_s for p in plans] == [i / 4 for i in range(8)]


def test_without_durations_every_call_ends_after_the_hold() -> None:
    plans = plan_calls(RunConfig(calls=5, mix={"twilio": 1}, ramp=2.0, hold_s=3.0))
    ends = {round(p.start_s + p.duration_s, 9) for p in plans}
    assert ends == {2.0 + 3.0}


def test_durations_cycle_over_calls() -> None:
    config = RunConfig(calls=5, mix={"vonage": 1}, ramp=math.inf, durations=(1.0, 2.0))
    assert [p.duration_s for p in plan_calls(config)] == [1.0, 2.0, 1.0, 2.0, 1.0]


def test_a_plan_needs_a_call() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan_calls(RunConfig(calls=0, mix={"twilio": 1}))
