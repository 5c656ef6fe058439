"""The per-call media token: short-lived, single-use, HMAC-signed, bound to one call.

When the gateway answers a carrier's webhook it admits the call and points the carrier's
media stream at ``/media/<provider>/<token>``. The token lives in the URL *path* because
Twilio's ``<Stream url>`` drops query strings (Twilio Media Streams docs, "Stream"
noun); Vonage NCCO ``connect`` endpoints and Plivo ``<Stream>`` take the same URL. When
the socket opens, :meth:`CallTokens.verify` checks it and a :class:`TokenUseRegistry`
makes sure it opens at most one socket (see ../shared/reference/reliability.md §5.2).

Wire format (version 1), base64url without padding (RFC 4648 §5, §3.2)::

    version(1) | kid_len(1) | kid | payload | mac(16)

* ``kid`` names the :class:`SigningKey`, so keys can rotate: sign with the first key,
  verify with any key still listed.
* ``payload`` is a MessagePack array ``[provider, call_id, tenant_id, expires_at,
  nonce]`` (encoded and strictly decoded by msgspec). An id that is a canonical
  lower-case UUID travels as its 16 raw bytes (MessagePack ext type 1), anything else
  as UTF-8 text, so a token for UUID ids is 111 characters (NCCO headers and URLs have
  size limits).
* ``mac`` is HMAC-SHA256 (RFC 2104) over a context label and everything before it,
  truncated to 128 bits, which RFC 2104 §5 allows (at least half the hash output and
  not less than 80 bits). The MAC is checked, in constant time, *before* the payload
  is decoded, so unauthenticated bytes never reach the decoder.

Time is passed in: ``now`` is Unix time in seconds (the token crosses processes, so it
is wall-clock time, not a monotonic clock). Gateways in a fleet must keep their clocks
in sync (NTP); the Redis registry keeps used nonces a margin longer to cover skew.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import msgspec

from gateway.errors import CallTokenError, ConfigError, CoordinationUnavailable

__all__ = [
    "DEFAULT_TTL_S",
    "CallTokenClaims",
    "CallTokens",
    "MemoryTokenUseRegistry",
    "SigningKey",
    "TokenRejection",
    "TokenUseRegistry",
]

TOKEN_VERSION = 1
"""Format version, the token's first byte."""
DEFAULT_TTL_S = 60
"""Seconds a token stays valid: the carrier opens the stream within a second or two of
our answer; 60 s covers slow carriers without leaving replayable tokens around."""
MAX_TTL_S = 3600
"""Longest lifetime :meth:`CallTokens.issue` accepts, in seconds."""
MIN_KEY_BYTES = 32
"""RFC 2104 §3: keys shorter than the hash output (32 bytes for SHA-256) weaken the MAC."""
MAC_BYTES = 16
NONCE_BYTES = 12
MAX_ID_BYTES = 64
"""Longest call or tenant id, in UTF-8 bytes (the ``calls.id`` column is 64 characters)."""
MAX_TOKEN_CHARS = 512
"""Anything longer is rejected before it is decoded."""

_MAC_CONTEXT = b"rymi-gateway/call-token\x00"  # domain separation if a key is ever shared
_EXT_UUID = 1  # MessagePack extension type code for a 16-byte UUID id
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,8}")
_PROVIDER = re.compile(r"[a-z][a-z0-9_]{0,15}")


class TokenRejection(StrEnum):
    """Why a token was refused (the ``reason`` of the :class:`CallTokenError`)."""

    MALFORMED = "malformed"
    """Not a token of a format we know: bad base64, wrong length, bad version or payload."""
    UNKNOWN_KEY = "unknown_key"
    """Signed with a key id we do not hold (retired, or never ours)."""
    BAD_SIGNATURE = "bad_signature"
    """The MAC does not match: forged or altered."""
    EXPIRED = "expired"
    """``now`` is at or after the token's expiry."""
    WRONG_PROVIDER = "wrong_provider"
    """The token was issued for another carrier's media path."""
    REUSED = "reused"
    """The token has already opened a media socket."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One media-token signing key.

    Raises:
        ConfigError: the key id is not 1-8 characters of ``A-Z a-z 0-9 . _ -``, or the
            secret is shorter than :data:`MIN_KEY_BYTES`.
    """

    key_id: str
    """Short public name of the key, carried in every token it signs."""
    secret: bytes = field(repr=False)
    """The HMAC key; never logged or shown in a repr."""

    def __post_init__(self) -> None:
        if not _KEY_ID.fullmatch(self.key_id):
            raise ConfigError("media token key id", "expected 1-8 characters of A-Z a-z 0-9 . _ -")
        if len(self.secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"media token key {self.key_id}",
                f"expected at least {MIN_KEY_BYTES} bytes of secret, got {len(self.secret)}",
            )


@dataclass(frozen=True, slots=True)
class CallTokenClaims:
    """What a verified token says."""

    provider: str
    """Carrier name, e.g. ``"twilio"``; equal to the media path's provider."""
    call_id: str
    """Our call id (the ``calls.id`` of the admitted call)."""
    tenant_id: str
    """The tenant that owns the call."""
    expires_at: int
    """Unix time in seconds at which the token stops being valid."""
    nonce: bytes = field(repr=False)
    """Random 96-bit value that makes the token single-use (:class:`TokenUseRegistry`)."""


class _Payload(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    provider: str
    call_id: str | msgspec.msgpack.Ext
    tenant_id: str | msgspec.msgpack.Ext
    expires_at: int
    nonce: bytes


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Payload)


class CallTokens:
    """Issues and verifies media tokens with a ring of signing keys.

    Args:
        keys: signing keys, newest first. Tokens are signed with ``keys[0]``; a token
            signed by any listed key verifies, so a key is retired by dropping it from
            the end of the list once its last tokens have expired (:data:`MAX_TTL_S`).

    Raises:
        ConfigError: no keys, or two keys with the same id.
    """

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise ConfigError("media token keys", "expected at least one signing key")
        by_id = {key.key_id: key for key in keys}
        if len(by_id) != len(keys):
            raise ConfigError("media token keys", "key ids must be unique")
        self._signing = keys[0]
        self._by_id = by_id

    def issue(
        self,
        *,
        provider: str,
        call_id: str,
        tenant_id: str,
        now: float,
        ttl_s: int = DEFAULT_TTL_S,
        nonce: bytes | None = None,
    ) -> str:
        """Mint a token for one call's media socket.

        Args:
            provider: carrier name as in the media path (lower-case, e.g. ``"vonage"``).
            call_id: our call id (at most :data:`MAX_ID_BYTES` UTF-8 bytes).
            tenant_id: the call's tenant id (same limit).
            now: current Unix time in seconds.
            ttl_s: lifetime in whole seconds, 1 to :data:`MAX_TTL_S`, counted from the
                start of the current second (expiry is ``int(now) + ttl_s``).
            nonce: :data:`NONCE_BYTES` random bytes; by default fresh from ``secrets``.

        Returns:
            The token, URL-safe and path-safe (``A-Z a-z 0-9 - _``).

        Raises:
            ValueError: an argument is out of range (a programming error on our side).
        """
        _check_issue_args(provider, call_id, tenant_id, now, ttl_s)
        nonce = secrets.token_bytes(NONCE_BYTES) if nonce is None else nonce
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce: expected {NONCE_BYTES} bytes, got {len(nonce)}")
        payload = _Payload(
            provider, _pack_id(call_id), _pack_id(tenant_id), int(now) + ttl_s, nonce
        )
        kid = self._signing.key_id.encode("ascii")
        signed = bytes((TOKEN_VERSION, len(kid))) + kid + _ENCODER.encode(payload)
        blob = signed + _mac(self._signing.secret, signed)
        return base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")

    def verify(self, token: str, provider: str, now: float) -> CallTokenClaims:
        """Check a token's format, signature, provider binding and expiry.

        This does not consume the token; :meth:`redeem` does both.

        Args:
            token: the path segment as received.
            provider: the carrier whose media path the token arrived on.
            now: current Unix time in seconds.

        Returns:
            The claims of a valid token.

        Raises:
            CallTokenError: with ``reason`` one of :class:`TokenRejection` (never
                ``REUSED`` here). The message never contains the token.
        """
        signed, mac = _split(_decode_b64(token))
        key = self._key_for(signed)
        if not hmac.compare_digest(mac, _mac(key.secret, signed)):
            raise CallTokenError(
                "call token signature mismatch", reason=TokenRejection.BAD_SIGNATURE
            )
        claims = _decode_claims(signed[2 + signed[1] :])
        if not hmac.compare_digest(claims.provider.encode(), provider.encode()):
            raise CallTokenError(
                f"call token was issued for {claims.provider!r}, not {provider!r}",
                reason=TokenRejection.WRONG_PROVIDER,
            )
        if now >= claims.expires_at:
            raise CallTokenError("call token has expired", reason=TokenRejection.EXPIRED)
        return claims

    async def redeem(
        self, token: str, provider: str, now: float, registry: TokenUseRegistry
    ) -> CallTokenClaims:
        """Verify a token and consume it: the single-use check for a media socket.

        Raises:
            CallTokenError: as :meth:`verify`, or with reason ``REUSED``.
            CoordinationUnavailable: the registry cannot answer (fail closed).
        """
        claims = self.verify(token, provider, now)
        if not await registry.consume(claims.nonce, claims.expires_at, now):
            raise CallTokenError("call token was already used", reason=TokenRejection.REUSED)
        return claims

    def _key_for(self, signed: bytes) -> SigningKey:
        if signed[0] != TOKEN_VERSION:
            raise _malformed(f"unsupported call token version {signed[0]}")
        kid_len = signed[1]
        if not 1 <= kid_len <= 8 or len(signed) <= 2 + kid_len:
            raise _malformed("call token key id has a bad length")
        kid = signed[2 : 2 + kid_len].decode("ascii", errors="replace")
        key = self._by_id.get(kid)
        if key is None:
            raise CallTokenError(
                "call token is signed with a key we do not hold", reason=TokenRejection.UNKNOWN_KEY
            )
        return key


class TokenUseRegistry(Protocol):
    """Shared memory of which tokens have been used (the "single use" in single-use)."""

    async def consume(self, nonce: bytes, expires_at: float, now: float) -> bool:
        """Record a token's nonce as used.

        Args:
            nonce: the token's nonce.
            expires_at: the token's expiry, Unix seconds; the nonce need not be kept long
                after it, since :meth:`CallTokens.verify` refuses the token by then.
            now: current Unix time in seconds.

        Returns:
            True the first time a nonce is consumed before its expiry, False afterwards
            (and always False once ``now >= expires_at``).

        Raises:
            CoordinationUnavailable: the backend cannot answer; callers must refuse.
        """
        ...


class MemoryTokenUseRegistry:
    """In-process :class:`TokenUseRegistry` for a single gateway (the embedded default).

    Entries are purged once their token has expired. The registry is bounded: when it
    holds ``max_entries`` unexpired nonces it refuses new ones with
    :class:`CoordinationUnavailable` rather than forget a nonce (forgetting one would let
    its token be replayed). At the default lifetime of 60 s, 100 000 entries is a
    sustained 1 600 calls per second, far beyond one process.

    Args:
        max_entries: most unexpired nonces held at once.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ConfigError("token registry max_entries", f"expected >= 1, got {max_entries}")
        self._max = max_entries
        self._expiry: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    async def consume(self, nonce: bytes, expires_at: float, now: float) -> bool:
        """See :meth:`TokenUseRegistry.consume`."""
        self._purge(now)
        if expires_at <= now or nonce in self._expiry:
            return False
        if len(self._expiry) >= self._max:
            raise CoordinationUnavailable(
                f"token registry holds {self._max} unexpired nonces; refusing new calls"
            )
        self._expiry[nonce] = expires_at
        heapq.heappush(self._heap, (expires_at, nonce))
        return True

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, nonce = heapq.heappop(self._heap)
            del self._expiry[nonce]


def _check_issue_args(provider: str, call_id: str, tenant_id: str, now: float, ttl_s: int) -> None:
    if not _PROVIDER.fullmatch(provider):
        raise ValueError("provider: expected a lower-case carrier name such as 'twilio'")
    for name, value in (("call_id", call_id), ("tenant_id", tenant_id)):
        if not 1 <= len(value.encode("utf-8")) <= MAX_ID_BYTES:
            raise ValueError(f"{name}: expected 1-{MAX_ID_BYTES} UTF-8 bytes")
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s: expected 1-{MAX_TTL_S} seconds, got {ttl_s}")
    if not 0 <= now < 2**40:
        raise ValueError("now: expected Unix time in seconds")


def _pack_id(value: str) -> str | msgspec.msgpack.Ext:
    """A canonical lower-case UUID as its 16 bytes (20 characters saved), else the text."""
    if len(value) == 36:
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            return value
        if str(parsed) == value:
            return msgspec.msgpack.Ext(_EXT_UUID, parsed.bytes)
    return value


def _unpack_id(value: str | msgspec.msgpack.Ext) -> str:
    if isinstance(value, msgspec.msgpack.Ext):
        data = bytes(value.data)
        if value.code != _EXT_UUID or len(data) != 16:
            raise _malformed("call token id is not a UUID")
        return str(uuid.UUID(bytes=data))
    if not 1 <= len(value.encode("utf-8")) <= MAX_ID_BYTES:
        raise _malformed("call token id has a bad length")
    return value


def _mac(secret: bytes, signed: bytes) -> bytes:
    return hmac.new(secret, _MAC_CONTEXT + signed, hashlib.sha256).digest()[:MAC_BYTES]


def _malformed(message: str) -> CallTokenError:
    return CallTokenError(message, reason=TokenRejection.MALFORMED)


def _decode_b64(token: str) -> bytes:
    """Strict, canonical base64url: one token string maps to exactly one byte string."""
    if not 0 < len(token) <= MAX_TOKEN_CHARS:
        raise _malformed(f"call token must be 1-{MAX_TOKEN_CHARS} characters")
    try:
        raw = token.encode("ascii")
        blob = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, ValueError):
        raise _malformed("call token is not base64url") from None
    # Non-zero unused bits in the last character decode to the same bytes; refuse them
    # so that a token has exactly one spelling (RFC 4648 §3.5, canonical encoding).
    if base64.urlsafe_b64encode(blob).rstrip(b"=") != raw:
        raise _malformed("call token is not canonical base64url")
    return blob


def _split(blob: bytes) -> tuple[bytes, bytes]:
    if len(blob) < 3 + MAC_BYTES:
        raise _malformed("call token is too short")
    return blob[:-MAC_BYTES], blob[-MAC_BYTES:]


def _decode_claims(payload: bytes) -> CallTokenClaims:
    # Only reached for authentic tokens, so a failure here means a bug or a key leak;
    # still refuse cleanly rather than crash.
    try:
        fields = _DECODER.decode(payload)
    except msgspec.DecodeError:
        raise _malformed("call token payload does not decode") from None
    if len(fields.nonce) != NONCE_BYTES:
        raise _malformed("call token nonce has a bad length")
    return CallTokenClaims(
        provider=fields.provider,
        call_id=_unpack_id(fields.call_id),
        tenant_id=_unpack_id(fields.tenant_id),
        expires_at=fields.expires_at,
        nonce=fields.nonce,
    )
