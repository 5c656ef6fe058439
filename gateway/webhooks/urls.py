"""Where webhooks may be sent: URL rules at registration, and an address guard at send time.

reliability.md 3.2 item 7 (SSRF): a tenant chooses the URL, and the gateway POSTs to it
from inside the operator's network, so in production a webhook may only reach public
addresses:

* ``https://`` only; ``http://`` is allowed for a loopback host in development mode
  (``RYMI_WEBHOOK_DEV_MODE``), so a laptop can receive its own webhooks;
* in production the host must resolve (the event loop's ``getaddrinfo``), and *every*
  address it resolves to must be global: no private (RFC 1918, ULA), loopback,
  link-local (cloud metadata at 169.254.169.254), shared (RFC 6598), multicast or reserved
  address, including IPv4 inside IPv6 (``::ffff:10.0.0.1``);
* no user name or password in the URL, no fragment, at most 2048 characters.

DNS can change between registration and delivery, so the dispatcher checks again at
send time: :class:`PublicOnlyResolver` filters what aiohttp connects to (the checked
addresses are the ones used, so a second lookup cannot swap in a private one), and
:func:`check_literal` covers IP-literal hosts, which aiohttp does not resolve.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from gateway.errors import ValidationError

__all__ = ["PublicOnlyResolver", "check_literal", "check_url", "is_public_address"]

MAX_URL_LENGTH = 2048
_RESOLVE_TIMEOUT_S = 5.0
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_public_address(address: str) -> bool:
    """Whether ``address`` (IPv4 or IPv6 text, maybe with a ``%scope``) is globally routable."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _is_loopback_host(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


async def check_url(url: str, *, dev_mode: bool) -> str:
    """Validate a webhook URL for registration; returns it unchanged.

    Raises:
        ValidationError: naming ``url`` and the rule it breaks.
    """
    if not 1 <= len(url) <= MAX_URL_LENGTH:
        raise ValidationError("url", f"expected an https:// URL of at most {MAX_URL_LENGTH} chars")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise ValidationError("url", "expected an https:// URL") from None
    if not host:
        raise ValidationError("url", "expected an https:// URL with a host")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValidationError("url", "expected no user name, password or #fragment in the URL")
    if parts.scheme == "http":
        if not (dev_mode and _is_loopback_host(host)):
            raise ValidationError(
                "url", "expected https:// (http:// only for loopback in development mode)"
            )
    elif parts.scheme != "https":
        raise ValidationError("url", f"expected https://, got scheme {parts.scheme[:10]!r}")
    if dev_mode:
        return url
    addresses = await _resolve(host, port or 443)
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise ValidationError(
            "url", "the host must not resolve to a private, loopback or link-local address"
        )
    return url


async def _resolve(host: str, port: int) -> list[str]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(_RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, TimeoutError):
        raise ValidationError("url", "the host does not resolve") from None
    return [str(info[4][0]) for info in infos]


def check_literal(url: str) -> None:
    """At send time: refuse an IP-literal host that is not public (production mode).

    Raises:
        OSError: the address is not allowed (the dispatcher records a network error).
    """
    host = urlsplit(url).hostname or ""
    literal = _literal(host)
    if literal is not None and not is_public_address(literal):
        raise OSError("webhook address refused: not a public address")


class PublicOnlyResolver(AbstractResolver):
    """An aiohttp resolver that only returns public addresses (production mode)."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host``, dropping every address that is not public."""
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if is_public_address(str(r["host"]))]
        if not allowed:
            raise OSError(f"webhook host {host!r} resolves to no public address")
        return allowed

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()

    def __repr__(self) -> str:
        return "PublicOnlyResolver()"
