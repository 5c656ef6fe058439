"""Media call tokens: format, signature, binding, expiry, rotation and single use."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.calltoken import (
    MAX_ID_BYTES,
    CallTokenClaims,
    CallTokens,
    MemoryTokenUseRegistry,
    SigningKey,
    TokenRejection,
    TokenUseRegistry,
)
from gateway.calltoken_redis import RedisTokenUseRegistry
from gateway.errors import CallTokenError, ConfigError, CoordinationUnavailable
from tests.helpers.redis_server import free_port

KEY_A = SigningKey("a1", b"A" * 32)
KEY_B = SigningKey("b2", b"B" * 48)
CALL_ID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
TENANT_ID = "0b7e9a52-1c2d-4e3f-9a8b-7c6d5e4f3a2b"
NOW = 1_700_000_000.25
NONCE = bytes(range(12))
B64URL = string.ascii_letters + string.digits + "-_"
# The documented MAC input label (wire format v1); pinned here so a change is noticed.
MAC_CONTEXT = b"rymi-gateway/call-token\x00"


def issue(tokens: CallTokens, **overrides: object) -> str:
    args: dict[str, object] = {
        "provider": "twilio",
        "call_id": CALL_ID,
        "tenant_id": TENANT_ID,
        "now": NOW,
        "nonce": NONCE,
    }
    args.update(overrides)
    return tokens.issue(**args)  # type: ignore[arg-type]


def reason_of(tokens: CallTokens, token: str, provider: str = "twilio", now: float = NOW) -> str:
    with pytest.raises(CallTokenError) as info:
        tokens.verify(token, provider, now)
    if len(token) >= 8:  # the message never echoes the token
        assert token not in str(info.value)
    return info.value.reason


def forge(key: SigningKey, payload: object, *, version: int = 1) -> str:
    """A token signed with ``key`` around an arbitrary payload (white-box format check)."""
    kid = key.key_id.encode()
    signed = bytes((version, len(kid))) + kid + msgspec.msgpack.encode(payload)
    mac = hmac.new(key.secret, MAC_CONTEXT + signed, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(signed + mac).rstrip(b"=").decode()


class TestRoundTrip:
    def test_claims_come_back(self) -> None:
        tokens = CallTokens([KEY_A])
        claims = tokens.verify(issue(tokens), "twilio", NOW)
        assert claims == CallTokenClaims("twilio", CALL_ID, TENANT_ID, 1_700_000_060, NONCE)

    @pytest.mark.parametrize(
        ("call_id", "tenant_id"),
        [
            ("call_01HZX3", "tenant-7"),
            (CALL_ID.upper(), TENANT_ID),  # not canonical: kept as text, returned as given
            ("é" * 32, "x" * MAX_ID_BYTES),
        ],
    )
    def test_non_uuid_ids_round_trip_exactly(self, call_id: str, tenant_id: str) -> None:
        tokens = CallTokens([KEY_A])
        claims = tokens.verify(issue(tokens, call_id=call_id, tenant_id=tenant_id), "twilio", NOW)
        assert (claims.call_id, claims.tenant_id) == (call_id, tenant_id)

    def test_token_is_short_and_path_safe(self) -> None:
        tokens = CallTokens([KEY_A])
        token = tokens.issue(
            provider="vonage", call_id=str(uuid.uuid4()), tenant_id=str(uuid.uuid4()), now=NOW
        )
        assert len(token) < 150
        assert set(token) <= set(B64URL)

    def test_fresh_nonce_each_time(self) -> None:
        tokens = CallTokens([KEY_A])
        first = tokens.issue(provider="plivo", call_id="c", tenant_id="t", now=NOW)
        second = tokens.issue(provider="plivo", call_id="c", tenant_id="t", now=NOW)
        assert first != second
        assert tokens.verify(first, "plivo", NOW).nonce != tokens.verify(second, "plivo", NOW).nonce

    def test_secret_never_in_repr(self) -> None:
        assert "AAAA" not in repr(KEY_A)


class TestTampering:
    def test_every_character_substitution_is_rejected(self) -> None:
        tokens = CallTokens([KEY_A])
        token = issue(tokens)
        for i, original in enumerate(token):
            for char in B64URL:
                if char != original:
                    reason_of(tokens, token[:i] + char + token[i + 1 :])

    def test_every_bit_flip_of_the_bytes_is_rejected(self) -> None:
        tokens = CallTokens([KEY_A])
        blob = base64.urlsafe_b64decode(issue(tokens) + "==")
        for i in range(len(blob)):
            for bit in range(8):
                tampered = bytearray(blob)
                tampered[i] ^= 1 << bit
                encoded = base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode()
                reason_of(tokens, encoded)

    def test_truncated_and_extended_tokens_are_rejected(self) -> None:
        tokens = CallTokens([KEY_A])
        token = issue(tokens)
        for cut in range(len(token)):
            reason_of(tokens, token[:cut])
        for suffix in ("A", "AA", "AAA", "AAAA", "-"):
            reason_of(tokens, token + suffix)

    def test_non_canonical_base64_is_malformed(self) -> None:
        tokens = CallTokens([KEY_A])
        token = issue(tokens)  # 83 bytes: the last character carries 4 unused bits
        last = B64URL.index(token[-1])
        variant = token[:-1] + B64URL[last | 1]
        assert variant != token
        assert reason_of(tokens, variant) == TokenRejection.MALFORMED

    @pytest.mark.parametrize("junk", ["", "é", "a b", "x" * 600, "====", "AAAA=", "+/+/"])
    def test_junk_is_malformed(self, junk: str) -> None:
        assert reason_of(CallTokens([KEY_A]), junk) == TokenRejection.MALFORMED

    def test_unknown_version_is_malformed(self) -> None:
        token = forge(KEY_A, ["twilio", "c", "t", 2_000_000_000, NONCE], version=2)
        assert reason_of(CallTokens([KEY_A]), token) == TokenRejection.MALFORMED

    @pytest.mark.parametrize(
        "payload",
        [
            ["twilio", "c", "t", 2_000_000_000, b"short"],
            ["twilio", "c", "t", 2_000_000_000],
            ["twilio", "c", "t", "soon", NONCE],
            ["twilio", msgspec.msgpack.Ext(1, b"\x01" * 15), "t", 2_000_000_000, NONCE],
            ["twilio", msgspec.msgpack.Ext(2, b"\x01" * 16), "t", 2_000_000_000, NONCE],
            ["twilio", b"\x01" * 16, "t", 2_000_000_000, NONCE],
            ["twilio", "", "t", 2_000_000_000, NONCE],
            {"provider": "twilio"},
            "not an array",
        ],
    )
    def test_authentic_but_malformed_payload(self, payload: object) -> None:
        assert reason_of(CallTokens([KEY_A]), forge(KEY_A, payload)) == TokenRejection.MALFORMED

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=200))
    def test_random_strings_raise_only_call_token_error(self, text: str) -> None:
        reason = reason_of(CallTokens([KEY_A]), text)
        assert reason in set(TokenRejection) - {TokenRejection.REUSED}

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_random_base64url_raises_only_call_token_error(self, blob: bytes) -> None:
        text = base64.urlsafe_b64encode(blob).rstrip(b"=").decode()
        reason = reason_of(CallTokens([KEY_A]), text)
        assert reason in set(TokenRejection) - {TokenRejection.REUSED}


class TestBindingAndExpiry:
    def test_expiry_boundary(self) -> None:
        tokens = CallTokens([KEY_A])
        token = issue(tokens, ttl_s=60)  # issued at NOW = ...000.25 → expires at ...060
        assert tokens.verify(token, "twilio", 1_700_000_059.999).expires_at == 1_700_000_060
        assert reason_of(tokens, token, now=1_700_000_060) == TokenRejection.EXPIRED
        assert reason_of(tokens, token, now=1_800_000_000) == TokenRejection.EXPIRED

    @pytest.mark.parametrize("provider", ["plivo", "vonage", "Twilio", ""])
    def test_wrong_provider(self, provider: str) -> None:
        tokens = CallTokens([KEY_A])
        assert reason_of(tokens, issue(tokens), provider=provider) == TokenRejection.WRONG_PROVIDER

    def test_same_key_id_other_secret_is_bad_signature(self) -> None:
        token = issue(CallTokens([KEY_A]))
        impostor = CallTokens([SigningKey("a1", b"Z" * 32)])
        assert reason_of(impostor, token) == TokenRejection.BAD_SIGNATURE

    def test_unknown_key_id(self) -> None:
        token = issue(CallTokens([KEY_A]))
        assert reason_of(CallTokens([KEY_B]), token) == TokenRejection.UNKNOWN_KEY


class TestKeyRotation:
    def test_old_tokens_verify_while_the_old_key_is_listed(self) -> None:
        old_token = issue(CallTokens([KEY_A]))
        ring = CallTokens([KEY_B, KEY_A])
        assert ring.verify(old_token, "twilio", NOW).call_id == CALL_ID
        new_token = issue(ring)
        assert CallTokens([KEY_B]).verify(new_token, "twilio", NOW).call_id == CALL_ID
        assert reason_of(CallTokens([KEY_A]), new_token) == TokenRejection.UNKNOWN_KEY

    def test_retired_key_is_refused(self) -> None:
        old_token = issue(CallTokens([KEY_A, KEY_B]))
        assert reason_of(CallTokens([KEY_B]), old_token) == TokenRejection.UNKNOWN_KEY


class TestConfiguration:
    @pytest.mark.parametrize(
        ("key_id", "secret"),
        [("", b"x" * 32), ("toolongid", b"x" * 32), ("a/b", b"x" * 32), ("ok", b"x" * 31)],
    )
    def test_bad_keys(self, key_id: str, secret: bytes) -> None:
        with pytest.raises(ConfigError) as info:
            SigningKey(key_id, secret)
        assert "xxxx" not in str(info.value)

    def test_key_ring_must_be_non_empty_and_unique(self) -> None:
        with pytest.raises(ConfigError):
            CallTokens([])
        with pytest.raises(ConfigError):
            CallTokens([KEY_A, SigningKey("a1", b"C" * 32)])

    @pytest.mark.parametrize(
        "overrides",
        [
            {"provider": "Twilio"},
            {"provider": ""},
            {"call_id": ""},
            {"tenant_id": "x" * (MAX_ID_BYTES + 1)},
            {"ttl_s": 0},
            {"ttl_s": 3601},
            {"now": -1.0},
            {"nonce": b"short"},
        ],
    )
    def test_issue_rejects_bad_arguments(self, overrides: dict[str, object]) -> None:
        with pytest.raises(ValueError, match=next(iter(overrides))):
            issue(CallTokens([KEY_A]), **overrides)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[TokenUseRegistry]:
    """Every TokenUseRegistry backend, for the one contract suite below."""
    if request.param == "memory":
        yield MemoryTokenUseRegistry()
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisTokenUseRegistry(client, key_prefix=f"test:{uuid.uuid4()}:")
    finally:
        await client.aclose()


class TestRegistryContract:
    async def test_redeem_once_then_reused(self, registry: TokenUseRegistry) -> None:
        tokens = CallTokens([KEY_A])
        token = tokens.issue(provider="twilio", call_id=CALL_ID, tenant_id=TENANT_ID, now=NOW)
        assert (await tokens.redeem(token, "twilio", NOW, registry)).call_id == CALL_ID
        with pytest.raises(CallTokenError) as info:
            await tokens.redeem(token, "twilio", NOW + 1, registry)
        assert info.value.reason == TokenRejection.REUSED

    async def test_invalid_token_is_not_consumed(self, registry: TokenUseRegistry) -> None:
        tokens = CallTokens([KEY_A])
        token = tokens.issue(provider="twilio", call_id=CALL_ID, tenant_id=TENANT_ID, now=NOW)
        with pytest.raises(CallTokenError):
            await tokens.redeem(token, "plivo", NOW, registry)
        with pytest.raises(CallTokenError):
            await tokens.redeem(token, "twilio", NOW + 3600, registry)
        await tokens.redeem(token, "twilio", NOW, registry)

    async def test_consume_semantics(self, registry: TokenUseRegistry) -> None:
        assert await registry.consume(b"a" * 12, 1060.0, 1000.0)
        assert not await registry.consume(b"a" * 12, 1060.0, 1000.0)
        assert await registry.consume(b"b" * 12, 1060.0, 1000.0)
        assert not await registry.consume(b"c" * 12, 1000.0, 1000.0)  # expired: never


class TestMemoryRegistry:
    async def test_expired_entries_are_purged(self) -> None:
        registry = MemoryTokenUseRegistry()
        assert await registry.consume(b"a" * 12, 100.0, 0.0)
        assert await registry.consume(b"b" * 12, 200.0, 0.0)
        assert not await registry.consume(b"a" * 12, 100.0, 99.0)
        assert await registry.consume(b"c" * 12, 300.0, 150.0)
        assert len(registry) == 2  # "a" is gone
        assert not await registry.consume(b"a" * 12, 100.0, 150.0)  # expired: never again

    async def test_full_registry_fails_closed(self) -> None:
        registry = MemoryTokenUseRegistry(max_entries=2)
        assert await registry.consume(b"a" * 12, 100.0, 0.0)
        assert await registry.consume(b"b" * 12, 100.0, 0.0)
        with pytest.raises(CoordinationUnavailable):
            await registry.consume(b"c" * 12, 100.0, 0.0)
        assert not await registry.consume(b"a" * 12, 100.0, 0.0)  # still remembered
        assert await registry.consume(b"c" * 12, 200.0, 100.0)  # room again after expiry

    def test_bound_must_be_positive(self) -> None:
        with pytest.raises(ConfigError):
            MemoryTokenUseRegistry(max_entries=0)


@pytest.mark.redis
class TestRedisRegistry:
    async def test_gateways_sharing_redis_see_each_others_nonces(self, redis_url: str) -> None:
        prefix = f"test:{uuid.uuid4()}:"
        first, second = Redis.from_url(redis_url), Redis.from_url(redis_url)
        try:
            tokens = CallTokens([KEY_A])
            token = issue(tokens)
            await tokens.redeem(
                token, "twilio", NOW, RedisTokenUseRegistry(first, key_prefix=prefix)
            )
            with pytest.raises(CallTokenError) as info:
                await tokens.redeem(
                    token, "twilio", NOW, RedisTokenUseRegistry(second, key_prefix=prefix)
                )
            assert info.value.reason == TokenRejection.REUSED
        finally:
            await first.aclose()
            await second.aclose()

    async def test_nonce_kept_until_expiry_plus_margin(self, redis_client: Redis) -> None:
        prefix = f"test:{uuid.uuid4()}:"
        registry = RedisTokenUseRegistry(redis_client, key_prefix=prefix, skew_margin_s=30)
        assert await registry.consume(NONCE, expires_at=1060.0, now=1000.0)
        ttl_ms = await redis_client.pttl(prefix + NONCE.hex())
        assert 85_000 < ttl_ms <= 90_000
        assert not await registry.consume(NONCE, expires_at=1060.0, now=1001.0)
        assert not await registry.consume(b"z" * 12, expires_at=1000.0, now=1000.0)
        assert await redis_client.exists(prefix + (b"z" * 12).hex()) == 0

    async def test_unreachable_redis_fails_closed(self) -> None:
        client = Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        try:
            registry = RedisTokenUseRegistry(client)
            with pytest.raises(CoordinationUnavailable) as info:
                await registry.consume(NONCE, 1060.0, 1000.0)
            assert info.value.__cause__ is not None
        finally:
            await client.aclose()

    def test_margin_is_validated(self, redis_client: Redis) -> None:
        with pytest.raises(ConfigError):
            RedisTokenUseRegistry(redis_client, skew_margin_s=-1)
