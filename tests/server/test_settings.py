"""The call engine's settings: defaults, ranges, and values that are refused (never clamped)."""

from __future__ import annotations

import pytest

from gateway.config import Settings
from gateway.errors import ConfigError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.media_start_timeout_s, s.agent_grace_s, s.duration_warning_s) == (5, 2, 30)
    assert (s.reservation_ttl_s, s.lease_ttl_s, s.lease_renew_interval_s) == (30, 15, 5)
    assert s.max_call_duration_cap_s is None
    assert s.carrier_api_base_url("twilio") is None
    assert s.redis_namespace == "rymi"
    assert (s.agent_transport, s.event_loop) == ("picows", "uvloop")


def test_values_are_read() -> None:
    s = Settings.from_env(
        {
            "RYMI_MAX_CALL_DURATION_CAP_S": "2",
            "RYMI_LEASE_TTL_S": "3",
            "RYMI_LEASE_RENEW_INTERVAL_S": "1",
            "RYMI_PLIVO_API_BASE_URL": "http://127.0.0.1:9000/",
            "RYMI_REDIS_NAMESPACE": "staging-1",
            "RYMI_AGENT_TRANSPORT": "AIOHTTP",
            "RYMI_EVENT_LOOP": "asyncio",
        }
    )
    assert (s.max_call_duration_cap_s, s.lease_ttl_s, s.lease_renew_interval_s) == (2, 3, 1)
    assert s.carrier_api_base_url("plivo") == "http://127.0.0.1:9000"
    assert s.redis_namespace == "staging-1"
    assert (s.agent_transport, s.event_loop) == ("aiohttp", "asyncio")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RYMI_MEDIA_START_TIMEOUT_S", "0"),
        ("RYMI_MAX_CALL_DURATION_CAP_S", "7201"),
        ("RYMI_LEASE_RENEW_INTERVAL_S", "15"),  # must be below the 15 s lease TTL
        ("RYMI_MEDIA_MAX_MESSAGES_PER_S", "5"),
        ("RYMI_TWILIO_API_BASE_URL", "ftp://example.com"),
        ("RYMI_REDIS_NAMESPACE", "has space"),
        ("RYMI_AGENT_TRANSPORT", "websockets"),
        ("RYMI_EVENT_LOOP", "trio"),
    ],
)
def test_out_of_range_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_a_choice_error_lists_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match="expected one of picows, aiohttp, got 'ws'"):
        Settings.from_env({"RYMI_AGENT_TRANSPORT": "ws"})
