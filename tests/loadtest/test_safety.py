"""Targets: loopback, or hosts the operator names."""

from __future__ import annotations

import pytest

from loadtest.safety import UnsafeTarget, check_target


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://127.0.0.5", "http://[::1]:9000", "https://localhost"]
)
def test_loopback_is_allowed(url: str) -> None:
    check_target(url)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8080", "https://gw.example.com", "http://0.0.0.0"]
)
def test_other_hosts_need_to_be_named(url: str) -> None:
    with pytest.raises(UnsafeTarget, match="--allow-target"):
        check_target(url)


def test_a_named_host_is_allowed_exactly() -> None:
    assert check_target("https://GW.example.com/x", ["gw.example.com"]) == "gw.example.com"
    with pytest.raises(UnsafeTarget):
        check_target("https://gw.example.com.evil.net", ["gw.example.com"])


@pytest.mark.parametrize("url", ["ftp://127.0.0.1", "127.0.0.1:8080", "http://"])
def test_non_http_targets_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTarget, match="http"):
        check_target(url)
