"""OpsSettings: RYMI_LOG_* and RYMI_METRICS_TENANTS."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.metrics import TenantLabels
from gateway.ops.settings import ENV_NAMES, OpsSettings


def test_defaults_are_text_info_and_no_tenant_series() -> None:
    settings = OpsSettings.from_env({})
    assert (settings.log_format, settings.log_level) == ("text", "info")
    assert not settings.metrics_tenants.enabled
    assert settings.drain_deadline_s is None
    assert settings == OpsSettings.from_env(dict.fromkeys(ENV_NAMES, "  "))


def test_values_are_read() -> None:
    settings = OpsSettings.from_env(
        {
            "RYMI_LOG_FORMAT": "JSON",
            "RYMI_LOG_LEVEL": "debug",
            "RYMI_METRICS_TENANTS": " acme , 0b7c2f8e-1d2a-4a55-9d6e-3f0c1a2b3c4d,acme",
            "RYMI_DRAIN_DEADLINE_S": "900",
        }
    )
    assert settings.drain_deadline_s == 900
    assert (settings.log_format, settings.log_level) == ("json", "debug")
    assert settings.metrics_tenants == TenantLabels(
        frozenset({"acme", "0b7c2f8e-1d2a-4a55-9d6e-3f0c1a2b3c4d"})
    )
    assert settings.metrics_tenants.label("acme") == "acme"
    assert settings.metrics_tenants.label("someone-else") == "other"


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("RYMI_LOG_FORMAT", "xml", "expected text or json"),
        ("RYMI_LOG_LEVEL", "verbose", "expected one of debug, info, warning, error"),
        ("RYMI_METRICS_TENANTS", "ok,has space", "entry 2 is not a tenant id"),
        ("RYMI_METRICS_TENANTS", "other", "entry 1 is not a tenant id"),
        ("RYMI_DRAIN_DEADLINE_S", "0", "expected an integer 1-86400"),
        ("RYMI_DRAIN_DEADLINE_S", "2h", "expected an integer 1-86400"),
        ("RYMI_METRICS_TENANTS", ",".join(f"t{n}" for n in range(101)), "at most 100"),
    ],
)
def test_bad_values_name_the_variable(name: str, raw: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        OpsSettings.from_env({name: raw})
    assert caught.value.field == name
