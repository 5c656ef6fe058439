"""Settings.from_env: defaults, shapes, ranges, and errors that name the variable."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from gateway.config import Settings, normalize_database_url
from gateway.errors import ConfigError

KEY_1 = base64.urlsafe_b64encode(b"\x01" * 32).decode()
KEY_2 = base64.urlsafe_b64encode(b"\x02" * 32).decode()


def test_defaults_are_one_node_embedded() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite+aiosqlite:///rymi-data/rymi.db"
    assert settings.data_dir == Path("rymi-data")
    assert settings.master_keys == ()
    assert settings.redis_url is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.base_url == "http://127.0.0.1:8080"
    assert (settings.checkpoint_interval_s, settings.reaper_stale_after_s) == (5, 60)


def test_data_dir_moves_the_default_database() -> None:
    settings = Settings.from_env({"RYMI_DATA_DIR": "/var/lib/rymi"})
    assert settings.database_url == "sqlite+aiosqlite:////var/lib/rymi/rymi.db"


def test_everything_can_be_set() -> None:
    settings = Settings.from_env(
        {
            "RYMI_DATABASE_URL": "postgres://rymi:pw@db/rymi",
            "RYMI_MASTER_KEYS": f"{KEY_1}, {KEY_2}",
            "RYMI_REDIS_URL": "redis://cache:6379/0",
            "RYMI_PUBLIC_BASE_URL": "https://gw.example.com/",
            "RYMI_HOST": "0.0.0.0",  # noqa: S104 - a value under test, nothing binds
            "RYMI_PORT": "9000",
            "RYMI_CHECKPOINT_INTERVAL_S": "2",
            "RYMI_REAPER_STALE_AFTER_S": "6",
            "UNRELATED": "ignored",
        }
    )
    assert settings.database_url == "postgresql+asyncpg://rymi:pw@db/rymi"
    assert settings.master_keys == (b"\x01" * 32, b"\x02" * 32)
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.base_url == "https://gw.example.com"
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)  # noqa: S104
    assert (settings.checkpoint_interval_s, settings.reaper_stale_after_s) == (2, 6)


def test_settings_are_frozen_and_hide_keys() -> None:
    settings = Settings.from_env({"RYMI_MASTER_KEYS": KEY_1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]
    assert KEY_1 not in repr(settings)
    assert repr(b"\x01" * 32) not in repr(settings)


def test_empty_variables_mean_default() -> None:
    assert Settings.from_env({"RYMI_PORT": "", "RYMI_REDIS_URL": "  "}) == Settings.from_env({})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RYMI_PORT", "0", "integer 1-65535, got 0"),
        ("RYMI_PORT", "65536", "integer 1-65535"),
        ("RYMI_PORT", "http", "integer 1-65535, got 'http'"),
        ("RYMI_CHECKPOINT_INTERVAL_S", "61", "integer 1-60"),
        ("RYMI_REAPER_STALE_AFTER_S", "14", "integer 15-86400"),  # >= 3 x 5 s
        ("RYMI_MEDIA_PING_INTERVAL_S", "0.5", "number 1-300, got 0.5"),
        ("RYMI_MEDIA_PING_INTERVAL_S", "soon", "number 1-300, got 'soon'"),
        ("RYMI_DATABASE_URL", "mysql://db/rymi", "sqlite\\+aiosqlite.*postgresql\\+asyncpg"),
        ("RYMI_DATABASE_URL", "not a url", "got scheme"),
        ("RYMI_REDIS_URL", "http://cache", "redis://"),
        ("RYMI_PUBLIC_BASE_URL", "ftp://gw", "http\\(s\\)://"),
        ("RYMI_PUBLIC_BASE_URL", "https://gw?x=1", "without a query"),
        ("RYMI_HOST", "bad host!", "IP address or host name"),
        ("RYMI_MASTER_KEYS", "c2hvcnQ=", "entry 1 is not url-safe base64 of 32 bytes"),
        ("RYMI_MASTER_KEYS", f"{KEY_1},{KEY_1}", "entry 2 repeats"),
    ],
)
def test_bad_values_name_the_variable_and_the_allowed_shape(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env({variable: value})
    assert info.value.field == variable
    assert str(info.value).startswith(f"{variable}: ")


def test_database_password_is_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        normalize_database_url("mysql://user:hunter2@db/rymi")
    assert "hunter2" not in str(info.value)


def test_master_key_values_are_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"RYMI_MASTER_KEYS": "TOPSECRETVALUE"})
    assert "TOPSECRETVALUE" not in str(info.value)


def test_api_settings_are_read_and_the_admin_token_never_echoed() -> None:
    token = "t0ken-" + "x" * 30
    settings = Settings.from_env(
        {
            "RYMI_ADMIN_TOKEN": token,
            "RYMI_API_RATE_PER_KEY": "10",
            "RYMI_API_RATE_PER_TENANT": "20",
            "RYMI_VONAGE_REST_BASE_URL": "http://127.0.0.1:9000/",
        }
    )
    assert settings.admin_token == token
    assert (settings.api_rate_per_key, settings.api_rate_per_tenant) == (10, 20)
    assert settings.vonage_rest_base_url == "http://127.0.0.1:9000"
    assert token not in repr(settings)


def test_a_short_admin_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"RYMI_ADMIN_TOKEN": "canary-short"})
    assert caught.value.field == "RYMI_ADMIN_TOKEN"
    assert "32" in str(caught.value)
    assert "canary-short" not in str(caught.value)


@pytest.mark.parametrize("value", ["0", "100001", "many"])
def test_api_rates_out_of_range_name_the_variable_and_range(value: str) -> None:
    with pytest.raises(ConfigError, match="RYMI_API_RATE_PER_KEY: expected an integer 1-100000"):
        Settings.from_env({"RYMI_API_RATE_PER_KEY": value})
