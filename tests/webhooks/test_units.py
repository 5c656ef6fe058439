"""Pure parts: signatures against the SDK, payload rules, address rules, settings."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.webhooks.alerts import parse_smtp_url
from gateway.webhooks.dispatcher import DispatchSettings
from gateway.webhooks.events import (
    CATALOG,
    EMITTED,
    balance_events,
    delivery_headers,
    make_event,
    sign,
)
from gateway.webhooks.urls import is_public_address
from tests.webhooks.conftest import Request, sdk_verify


@settings(max_examples=60, deadline=None)
@given(
    secret=st.text(min_size=16, max_size=64),
    data=st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=4),
    at_ms=st.integers(0, 2**41),
)
def test_every_signature_verifies_under_the_sdk(
    secret: str, data: dict[str, str], at_ms: int
) -> None:
    event = make_event("t1", "call.completed", data, at_ms)
    stamp = time.time_ns() // 1_000_000
    headers = delivery_headers(
        body=event.body,
        event_type=event.type,
        event_id=event.id,
        timestamp_ms=stamp,
        secret=secret,
        previous_secret=secret[::-1],
    )
    request = Request(0.0, headers, event.body)
    assert sdk_verify(request, secret)
    assert sdk_verify(request, secret[::-1], header="X-Rymi-Signature-Previous")
    assert json.loads(event.body)["data"] == data


def test_signature_is_hmac_of_timestamp_dot_body() -> None:
    # rymi-api.md 8.2: hex HMAC-SHA256(secret, "{timestamp}.{raw_body}").
    expected = hmac.new(b"whsec_test_secret_1", b"1700000000000.{}", hashlib.sha256).hexdigest()
    assert sign("whsec_test_secret_1", 1_700_000_000_000, b"{}") == expected
    assert sign("whsec_test_secret_1", 1_700_000_000_001, b"{}") != expected


def test_events_have_fresh_ids_and_only_emitted_types() -> None:
    ids = {make_event("t", "call.completed", {}, 0).id for _ in range(100)}
    assert len(ids) == 100
    assert EMITTED < CATALOG
    with pytest.raises(ValueError, match="not an emitted"):
        make_event("t", "call.started", {}, 0)  # reserved: accepted, never emitted


@settings(max_examples=200, deadline=None)
@given(
    before=st.integers(-(10**7), 10**7),
    debit=st.integers(0, 10**7),
    thresholds=st.lists(st.integers(1, 10**7), max_size=5, unique=True),
)
def test_balance_alerts_fire_exactly_for_crossed_levels(
    before: int, debit: int, thresholds: list[int]
) -> None:
    after = before - debit
    events = balance_events(before, after, thresholds, "c1")
    low = [e for t, e in events if t == "billing.low_balance"]
    crossed = sorted((t for t in thresholds if after < t <= before), reverse=True)
    assert [round(e["threshold_usd"] * 1_000_000) for e in low] == crossed
    depleted = [e for t, e in events if t == "billing.balance_depleted"]
    assert len(depleted) == (1 if before > 0 >= after else 0)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),  # noqa: S104 - an address under test, not a bind
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:93.184.216.34", True),
        ("not-an-address", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_settings_read_the_webhook_variables() -> None:
    env = {
        "RYMI_WEBHOOK_DEV_MODE": "true",
        "RYMI_WEBHOOK_ATTEMPT_TIMEOUT_S": "2.5",
        "RYMI_WEBHOOK_RETRY_BASE_S": "0.5",
        "RYMI_WEBHOOK_LEASE_S": "10",
        "RYMI_SMTP_URL": "smtp://mailer:hunter2-password@mail.example.com:2525?starttls=true",
    }
    s = Settings.from_env(env)
    assert (s.webhook_dev_mode, s.webhook_attempt_timeout_s, s.webhook_retry_base_s) == (
        True,
        2.5,
        0.5,
    )
    assert (s.webhook_max_attempts, s.webhook_rotation_window_s) == (5, 86_400)
    assert "hunter2" not in repr(s)
    target = DispatchSettings.from_settings(s).smtp
    assert target is not None
    assert (target.host, target.port, target.tls, target.username) == (
        "mail.example.com",
        2525,
        "starttls",
        "mailer",
    )
    assert "hunter2" not in repr(target)
    defaults = Settings.from_env({})
    assert (defaults.webhook_dev_mode, defaults.webhook_attempt_timeout_s) == (False, 3.0)
    assert (defaults.webhook_retry_base_s, defaults.webhook_retry_jitter) == (1.0, 0.2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RYMI_WEBHOOK_DEV_MODE", "maybe"),
        ("RYMI_WEBHOOK_ATTEMPT_TIMEOUT_S", "0"),
        ("RYMI_WEBHOOK_ATTEMPT_TIMEOUT_S", "nan"),
        ("RYMI_WEBHOOK_MAX_ATTEMPTS", "0"),
        ("RYMI_WEBHOOK_RETRY_JITTER", "0.9"),
        ("RYMI_WEBHOOK_LEASE_S", "3.5"),  # not above the 3 s attempt timeout + 1 s
        ("RYMI_WEBHOOK_ROTATION_WINDOW_S", "-1"),
        ("RYMI_SMTP_URL", "http://user:hunter2-password@mail.example.com"),
    ],
)
def test_bad_webhook_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert caught.value.field == name
    assert "hunter2" not in str(caught.value)


def test_smtps_defaults_to_port_465() -> None:
    target = parse_smtp_url("smtps://mail.example.com?from=alerts@example.com")
    assert (target.port, target.tls, target.sender) == (465, "ssl", "alerts@example.com")


def test_gaps_double_within_the_jitter() -> None:
    schedule = DispatchSettings()
    rng = random.Random(7)
    for attempt, base in enumerate((1.0, 2.0, 4.0, 8.0), start=1):
        gaps = [schedule.gap_s(attempt, rng) for _ in range(500)]
        assert base * 0.8 <= min(gaps) < base * 0.85
        assert base * 1.15 < max(gaps) <= base * 1.2
