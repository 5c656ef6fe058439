"""Where the load tester may send load, sans I/O.

A load tester pointed at the wrong host is a denial-of-service tool. It targets loopback
by default; any other address must be named by the operator (``--allow-target HOST``),
so a typo or a copied command cannot load a production gateway by accident.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["UnsafeTarget", "check_target"]


class UnsafeTarget(ValueError):
    """The target is not loopback and was not named with ``--allow-target``."""


def check_target(url: str, allowed: Iterable[str] = ()) -> str:
    """Return the host of ``url`` if the load tester may target it.

    Raises:
        UnsafeTarget: not http(s), no host, or a host that is neither loopback nor in
            ``allowed`` (compared exactly, case-insensitively).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTarget(f"expected an http(s)://HOST[:PORT] target, got {url[:80]!r}")
    host = parts.hostname.lower()
    if host == "localhost" or _is_loopback(host):
        return host
    if host in {name.lower() for name in allowed}:
        return host
    raise UnsafeTarget(
        f"{host} is not a loopback address; name it with --allow-target {host} to load it"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
