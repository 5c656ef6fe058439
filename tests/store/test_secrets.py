"""Secrets at rest: sealing, tenant binding, key rotation, dev keys, and the canary."""

from __future__ import annotations

import base64
import logging
import os
import stat
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.errors import ConfigError, GatewayError, SecretError, ValidationError
from gateway.store.directory import Directory
from gateway.store.models import TwilioCredentials, VonageCredentials
from gateway.store.secrets import (
    Keyring,
    Rotation,
    Sealed,
    Secret,
    key_usage,
    load_keyring,
    rotate,
)
from gateway.store.sql import schema
from tests.store.conftest import KEY_A, KEY_B

TWILIO_SID = "AC" + "fedcba9876543210" * 2


# -- the keyring (no database) ---------------------------------------------------


def test_sealed_value_opens_only_for_its_tenant_and_field() -> None:
    ring = Keyring((KEY_A,))
    sealed = ring.seal("auth-token-value", "tenant-1", "carrier:twilio")
    assert ring.open(sealed, "tenant-1", "carrier:twilio").reveal() == "auth-token-value"
    for tenant, field in (("tenant-2", "carrier:twilio"), ("tenant-1", "carrier:plivo")):
        with pytest.raises(SecretError, match="does not decrypt for this tenant"):
            ring.open(sealed, tenant, field)


def test_tampered_ciphertext_fails_to_open() -> None:
    ring = Keyring((KEY_A,))
    sealed = ring.seal("auth-token-value", "t", "f")
    flipped = bytearray(sealed.blob)
    flipped[-1] ^= 1
    with pytest.raises(SecretError):
        ring.open(Sealed(sealed.key_id, bytes(flipped)), "t", "f")
    with pytest.raises(SecretError):
        ring.open(Sealed(sealed.key_id, b"short"), "t", "f")


def test_newest_key_seals_and_every_configured_key_opens() -> None:
    old = Keyring((KEY_B,)).seal("v", "t", "f")
    both = Keyring((KEY_A, KEY_B))
    assert both.seal("v", "t", "f").key_id == both.newest_id != old.key_id
    assert both.open(old, "t", "f").reveal() == "v"
    with pytest.raises(SecretError, match=f"key id {old.key_id}.*not in RYMI_MASTER_KEYS"):
        Keyring((KEY_A,)).open(old, "t", "f")


def test_each_seal_uses_a_fresh_nonce() -> None:
    ring = Keyring((KEY_A,))
    blobs = {ring.seal("same", "t", "f").blob[:12] for _ in range(200)}
    assert len(blobs) == 200


def test_keyring_needs_32_byte_keys() -> None:
    with pytest.raises(ConfigError, match="RYMI_MASTER_KEYS"):
        Keyring(())
    with pytest.raises(ConfigError, match="32 bytes"):
        Keyring((b"short",))


def test_secret_hides_itself() -> None:
    secret = Secret("canary-value")
    assert "canary" not in repr(secret)
    assert "canary" not in str(secret)
    assert "canary" not in f"{secret} {secret!r}"
    assert secret == Secret("canary-value")
    assert secret != Secret("other")
    with pytest.raises(TypeError):
        __import__("pickle").dumps(secret)


def test_dev_mode_creates_one_private_key_file_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_env({"RYMI_DATA_DIR": str(tmp_path / "data")})
    with caplog.at_level(logging.WARNING, logger="gateway.store.secrets"):
        first = load_keyring(settings)
        second = load_keyring(settings)
    key_file = tmp_path / "data" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.newest_id == second.newest_id
    assert sum("RYMI_MASTER_KEYS is not set" in r.getMessage() for r in caplog.records) == 2
    assert key_file.read_text().strip() not in caplog.text


def test_configured_keys_win_over_the_dev_file(tmp_path: Path) -> None:
    key = base64.urlsafe_b64encode(KEY_A).decode()
    settings = Settings.from_env({"RYMI_DATA_DIR": str(tmp_path), "RYMI_MASTER_KEYS": key})
    assert load_keyring(settings).newest_id == Keyring((KEY_A,)).newest_id
    assert not (tmp_path / "master.key").exists()


# -- against the database --------------------------------------------------------


async def test_ciphertext_moved_to_another_tenant_does_not_decrypt(
    directory: Directory, engine: AsyncEngine
) -> None:
    victim = await directory.create_tenant("victim")
    thief = await directory.create_tenant("thief")
    await directory.connect_carrier(
        victim.id, TwilioCredentials(TWILIO_SID, Secret("victim-token"))
    )
    await directory.connect_carrier(
        thief.id, TwilioCredentials(TWILIO_SID, Secret("thief-token-1"))
    )
    table = schema.carrier_credentials
    async with engine.begin() as conn:
        stolen = (
            await conn.execute(
                sa.select(table.c.secret_ciphertext).where(table.c.tenant_id == victim.id)
            )
        ).scalar_one()
        await conn.execute(
            sa.update(table).where(table.c.tenant_id == thief.id).values(secret_ciphertext=stolen)
        )
    with pytest.raises(SecretError):
        await directory.carrier_credentials(thief.id)
    assert (await directory.carrier_credentials(victim.id)).account_id == TWILIO_SID
    # Rotation reports the bad row instead of stopping at it, and re-seals the rest.
    rotation = await rotate(engine, Keyring((KEY_B, KEY_A)))
    assert f"carrier_credentials tenant_id={thief.id} carrier=twilio" in rotation.unreadable
    assert rotation.resealed >= 1
    assert (await directory.carrier_credentials(victim.id)).account_id == TWILIO_SID
    await rotate(engine, Keyring((KEY_A, KEY_B)))  # back to the suite's newest key
    await directory.disconnect_carrier(thief.id)


async def test_rotation_reseals_everything_under_the_newest_key(engine: AsyncEngine) -> None:
    old_only = Directory(engine, Keyring((KEY_B,)))
    tenant = await old_only.create_tenant("rotating")
    creds = VonageCredentials("abcdef12", Secret("vonage-secret-1"), Secret("signature-2"))
    await old_only.connect_carrier(tenant.id, creds)
    agent = await old_only.create_agent(
        tenant.id, name="ws", pipeline="wss://a.example/x", pipeline_secret=Secret("x" * 32)
    )
    ring = Keyring((KEY_A, KEY_B))
    assert (await key_usage(engine))[Keyring((KEY_B,)).newest_id] >= 2
    first = await rotate(engine, ring, batch=1)  # batch 1: the keyset paging is exercised
    assert first.resealed >= 2
    assert set(await key_usage(engine)) == {ring.newest_id}
    assert await rotate(engine, ring) == Rotation(0, ())  # nothing left to do
    new_only = Directory(engine, Keyring((KEY_A,)))
    assert await new_only.carrier_credentials(tenant.id) == creds
    assert await new_only.agent_pipeline_secret(tenant.id, agent.id) == Secret("x" * 32)
    with pytest.raises(SecretError):
        await old_only.carrier_credentials(tenant.id)


async def test_canary_secret_never_reaches_logs_reprs_or_errors(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    canary = f"CANARY{uuid.uuid4().hex}"
    master = base64.urlsafe_b64encode(KEY_A).decode()
    seen: list[str] = []
    engine.sync_engine.echo = True  # SQL statement logging on: parameters must stay hidden
    try:
        with caplog.at_level(logging.DEBUG):
            directory = Directory(engine, Keyring((KEY_A, KEY_B)))
            tenant = await directory.create_tenant("canary")
            other = await directory.create_tenant("canary-other")
            creds = TwilioCredentials(TWILIO_SID, Secret(canary))
            seen += [repr(creds), str(creds)]
            seen.append(repr(await directory.connect_carrier(tenant.id, creds)))
            opened = await directory.carrier_credentials(tenant.id)
            seen += [repr(opened), str(opened)]
            agent = await directory.create_agent(
                tenant.id, name="a", pipeline="wss://a.example/x", pipeline_secret=Secret(canary)
            )
            seen += [repr(agent), repr(await directory.agent_pipeline_secret(tenant.id, agent.id))]
            for bad in (
                directory.connect_carrier(
                    other.id, TwilioCredentials(TWILIO_SID, Secret(canary + " x"))
                ),
                directory.create_agent(
                    tenant.id, name="b", pipeline="echo", pipeline_secret=Secret(canary)
                ),
            ):
                with pytest.raises(ValidationError) as info:
                    await bad
                seen += [str(info.value), repr(info.value)]
            with pytest.raises(SecretError) as moved:
                Keyring((KEY_A,)).open(
                    Keyring((KEY_A,)).seal(canary, tenant.id, "carrier:twilio"), other.id, "x"
                )
            seen.append(str(moved.value))
            with pytest.raises(ConfigError) as config_error:
                Settings.from_env({"RYMI_MASTER_KEYS": canary})
            seen.append(str(config_error.value))
            settings = Settings.from_env({"RYMI_MASTER_KEYS": master})
            seen += [repr(settings), str(settings)]
            await rotate(engine, Keyring((KEY_B, KEY_A)))
            await rotate(engine, Keyring((KEY_A, KEY_B)))
    finally:
        engine.sync_engine.echo = False
    assert caplog.records, "logging was captured"
    seen += [caplog.text, *(r.getMessage() for r in caplog.records)]
    for text in seen:
        assert canary not in text
        assert master not in text
    assert opened == creds  # the value itself did round-trip
    assert isinstance(info.value, GatewayError)
    assert os.environ.get("RYMI_MASTER_KEYS") is None or master not in str(os.environ)
