"""Shared pieces of request authentication: constant-time checks, URL forms, nonces.

Nothing here knows a carrier's algorithm; each adapter composes these. Every check
compares in constant time (``hmac.compare_digest``) and every failure raises
:class:`~gateway.errors.SignatureError` with a message that names the header or claim,
never the secret or the signature we expected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from typing import Protocol
from urllib.parse import SplitResult, urlsplit, urlunsplit

from gateway.errors import SignatureError

__all__ = [
    "DEFAULT_NONCE_TTL_S",
    "MemoryNonceStore",
    "NonceStore",
    "b64_hmac",
    "matches_any",
    "port_variants",
    "replace_scheme",
]

DEFAULT_NONCE_TTL_S = 600.0
"""How long a seen nonce is remembered, in seconds (reliability.md section 5.1)."""

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


class NonceStore(Protocol):
    """Remembers nonces (Plivo ``X-Plivo-Signature-V3-Nonce``, Vonage ``jti``) for a while.

    The in-memory store below serves one process; a fleet backs this with Redis
    (``SET key NX EX ttl``), either behind this interface or by using the replay key
    that ``verify_request`` returns when it is given no store.
    """

    def check_and_add(self, key: str, now: float) -> bool:
        """Record ``key`` as seen at ``now`` (Unix seconds).

        Returns:
            True if the key was new, False if it was already seen and not yet expired.
        """
        ...  # pragma: no cover - protocol


class MemoryNonceStore:
    """A bounded in-memory :class:`NonceStore` for one process.

    Entries expire ``ttl_s`` after they were first seen. When ``max_entries`` live
    entries exist the oldest is evicted: memory stays bounded under a flood, at the cost
    of forgetting the oldest nonces early (size it for ttl_s x peak request rate).

    Args:
        ttl_s: how long a nonce is remembered, in seconds.
        max_entries: the most nonces kept at once.
    """

    def __init__(self, ttl_s: float = DEFAULT_NONCE_TTL_S, max_entries: int = 100_000) -> None:
        if ttl_s <= 0 or max_entries <= 0:
            raise ValueError("ttl_s and max_entries must be positive")
        self._ttl_s = ttl_s
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()  # key -> expiry, oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, key: str, now: float) -> bool:
        """See :meth:`NonceStore.check_and_add`."""
        self._expire(now)
        if key in self._seen:
            return False
        if len(self._seen) >= self._max:
            self._seen.popitem(last=False)
        self._seen[key] = now + self._ttl_s
        return True

    def _expire(self, now: float) -> None:
        # Insertion order is expiry order (same ttl for all), so stop at the first live one.
        while self._seen:
            key, expiry = next(iter(self._seen.items()))
            if expiry > now:
                return
            del self._seen[key]


def b64_hmac(key: bytes, message: bytes, digest: str) -> bytes:
    """Base64 of ``HMAC-<digest>(key, message)``, as ASCII bytes."""
    return base64.b64encode(hmac.new(key, message, getattr(hashlib, digest)).digest())


def matches_any(expected: bytes, candidates: list[bytes]) -> bool:
    """Whether ``expected`` equals any candidate, comparing each in constant time.

    Every candidate is compared (no early exit), so timing does not tell which matched.
    """
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(expected, candidate)
    return found


def port_variants(url: str) -> list[str]:
    """The URL with the scheme's default port added and with any port removed.

    Twilio's own signing is inconsistent about the port, so its SDK
    (``twilio/request_validator.py`` ``add_port``/``remove_port``) accepts either form;
    we try the same two (carrier-protocols.md section 1.3).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    without = _with_netloc(parts, prefix + host)
    if parts.port is not None:
        return [url, without]
    default = _DEFAULT_PORTS.get(parts.scheme, 80)
    return [_with_netloc(parts, f"{prefix}{host}:{default}"), url]


def replace_scheme(url: str, scheme: str) -> str:
    """``url`` with its scheme replaced (e.g. ``https`` -> ``wss`` for a WS upgrade)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=scheme))


def _with_netloc(parts: SplitResult, netloc: str) -> str:
    return urlunsplit(parts._replace(netloc=netloc))


def require(condition: bool, what: str) -> None:
    """Raise :class:`SignatureError` naming ``what`` unless ``condition`` holds."""
    if not condition:
        raise SignatureError(what)
