"""The fleet's :class:`~gateway.calltoken.TokenUseRegistry`: used token nonces in Redis.

In a fleet the answer webhook and the media socket may land on different gateways, so
"this token was used" must be shared. One ``SET key 1 NX PX ttl`` does it atomically
(Redis docs, SET: ``NX`` sets only if the key does not exist and the reply tells which
happened), the pattern reliability.md §5.2 prescribes. This module is a state adapter
(it does I/O); it sits beside :mod:`gateway.calltoken` because it implements that
module's protocol and nothing else.
"""

from __future__ import annotations

import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import ConfigError, CoordinationUnavailable

__all__ = ["DEFAULT_KEY_PREFIX", "DEFAULT_SKEW_MARGIN_S", "RedisTokenUseRegistry"]

DEFAULT_KEY_PREFIX = "rymi:calltoken:used:"
DEFAULT_SKEW_MARGIN_S = 60.0
"""Extra seconds a used nonce is kept past the token's expiry by *our* clock: another
gateway whose clock lags ours by less than this still sees the nonce as used for as
long as it would accept the token."""


class RedisTokenUseRegistry:
    """Single-use check for media tokens, shared by every gateway through Redis.

    Args:
        redis: an asyncio Redis client (the one the coordination store uses).
        key_prefix: prefix of the per-nonce keys.
        skew_margin_s: see :data:`DEFAULT_SKEW_MARGIN_S`.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        skew_margin_s: float = DEFAULT_SKEW_MARGIN_S,
    ) -> None:
        if not 0 <= skew_margin_s <= 3600:
            raise ConfigError("token registry skew margin", "expected 0-3600 seconds")
        self._redis = redis
        self._prefix = key_prefix
        self._margin_s = skew_margin_s

    async def consume(self, nonce: bytes, expires_at: float, now: float) -> bool:
        """See :meth:`gateway.calltoken.TokenUseRegistry.consume`.

        Raises:
            CoordinationUnavailable: Redis did not answer; the caller refuses the socket
                (fail closed: a token we cannot mark as used is not accepted).
        """
        if expires_at <= now:
            return False
        # A relative TTL (PX) makes the retention independent of Redis's own clock.
        ttl_ms = math.ceil((expires_at - now + self._margin_s) * 1000)
        try:
            created = await self._redis.set(self._prefix + nonce.hex(), b"1", nx=True, px=ttl_ms)
        except RedisError as exc:
            raise CoordinationUnavailable("token registry: Redis did not answer") from exc
        return bool(created)
