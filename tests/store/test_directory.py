"""Directory contract: one suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import re
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConflictError, NotFoundError, ValidationError
from gateway.metering import Role
from gateway.store.directory import Directory
from gateway.store.models import (
    BargeIn,
    KeyKind,
    PlivoCredentials,
    Tenant,
    TwilioCredentials,
    VonageCredentials,
)
from gateway.store.secrets import Secret
from gateway.store.sql import schema
from tests.store.conftest import random_number, row_counts

TWILIO_SID = "AC" + "0123456789abcdef" * 2
WS_URL = "wss://agent.example.com/rymi"
AGENT_SECRET = Secret("s3cret-shared-with-the-agent-0123456789")


async def _tenant(directory: Directory, max_concurrent_calls: int | None = None) -> Tenant:
    name = f"tenant {uuid.uuid4().hex[:6]}"
    return await directory.create_tenant(name, max_concurrent_calls)


# -- tenants ---------------------------------------------------------------------


async def test_tenant_round_trips_with_no_cap_and_no_carrier(directory: Directory) -> None:
    tenant = await _tenant(directory)
    assert tenant.max_concurrent_calls is None
    assert tenant.active_carrier is None
    assert await directory.get_tenant(tenant.id) == tenant
    assert tenant in await directory.list_tenants()


async def test_tenant_limit_is_set_and_removed(directory: Directory) -> None:
    tenant = await _tenant(directory, max_concurrent_calls=3)
    assert tenant.max_concurrent_calls == 3
    assert (await directory.set_max_concurrent_calls(tenant.id, 20)).max_concurrent_calls == 20
    assert (await directory.set_max_concurrent_calls(tenant.id, None)).max_concurrent_calls is None


@pytest.mark.parametrize("bad", [-1, 100_001, True, "5"])
async def test_invalid_limit_is_refused_and_writes_nothing(
    directory: Directory, engine: AsyncEngine, bad: object
) -> None:
    tenant = await _tenant(directory, max_concurrent_calls=2)
    before = await row_counts(engine)
    with pytest.raises(ValidationError, match=r"max_concurrent_calls.*0-100000"):
        await directory.set_max_concurrent_calls(tenant.id, bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_concurrent_calls"):
        await directory.create_tenant("x", max_concurrent_calls=bad)  # type: ignore[arg-type]
    assert await row_counts(engine) == before
    assert (await directory.get_tenant(tenant.id)).max_concurrent_calls == 2


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
async def test_tenant_name_must_be_1_to_200_characters(
    directory: Directory, engine: AsyncEngine, name: str
) -> None:
    before = await row_counts(engine)
    with pytest.raises(ValidationError, match="name"):
        await directory.create_tenant(name)
    assert await row_counts(engine) == before


async def test_unknown_tenant_is_not_found(directory: Directory) -> None:
    with pytest.raises(NotFoundError):
        await directory.get_tenant(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        await directory.set_max_concurrent_calls(str(uuid.uuid4()), 1)


# -- API keys --------------------------------------------------------------------


async def test_secret_key_is_returned_once_and_stored_only_as_its_hash(
    directory: Directory, engine: AsyncEngine
) -> None:
    tenant = await _tenant(directory)
    created = await directory.create_api_key(tenant.id, label="backend")
    plaintext = created.plaintext.reveal()
    assert re.fullmatch(r"rymi_[A-Za-z0-9_-]{16,}", plaintext)
    assert plaintext.startswith(created.key.key_prefix)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(schema.api_keys).where(schema.api_keys.c.id == created.key.id)
            )
        ).one()
    assert row.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in str(tuple(row))
    assert await directory.authenticate(plaintext) == created.key
    assert await directory.list_api_keys(tenant.id) == [created.key]


async def test_publishable_key_is_bound_to_one_of_the_tenants_agents(
    directory: Directory, engine: AsyncEngine
) -> None:
    tenant, other = await _tenant(directory), await _tenant(directory)
    agent = await directory.create_agent(tenant.id, name="web")
    created = await directory.create_api_key(tenant.id, KeyKind.PUBLISHABLE, agent_id=agent.id)
    assert created.plaintext.reveal().startswith("sb_publishable_")
    assert created.key.agent_id == agent.id
    before = await row_counts(engine)
    with pytest.raises(NotFoundError):
        await directory.create_api_key(other.id, KeyKind.PUBLISHABLE, agent_id=agent.id)
    with pytest.raises(ValidationError, match="agent_id"):
        await directory.create_api_key(tenant.id, KeyKind.PUBLISHABLE)
    with pytest.raises(ValidationError, match="agent_id"):
        await directory.create_api_key(tenant.id, KeyKind.SECRET, agent_id=agent.id)
    assert await row_counts(engine) == before


async def test_revoked_or_unknown_keys_do_not_authenticate(directory: Directory) -> None:
    tenant, other = await _tenant(directory), await _tenant(directory)
    created = await directory.create_api_key(tenant.id)
    with pytest.raises(NotFoundError):
        await directory.revoke_api_key(other.id, created.key.id)  # not theirs
    await directory.revoke_api_key(tenant.id, created.key.id)
    for attempt in (created.plaintext.reveal(), "rymi_" + "x" * 40, "garbage"):
        with pytest.raises(NotFoundError, match="no such active key"):
            await directory.authenticate(attempt)
    assert await directory.list_api_keys(tenant.id) == []
    with pytest.raises(NotFoundError):
        await directory.revoke_api_key(tenant.id, created.key.id)  # already revoked


# -- carrier credentials ---------------------------------------------------------


async def test_one_active_carrier_per_tenant(directory: Directory) -> None:
    tenant = await _tenant(directory)
    twilio = TwilioCredentials(TWILIO_SID, Secret("twilio-auth-token-123"))
    assert (await directory.connect_carrier(tenant.id, twilio)).active_carrier == "twilio"
    assert await directory.carrier_credentials(tenant.id) == twilio
    vonage = VonageCredentials("abcd1234", Secret("vonage-api-secret"), Secret("sig-secret-xyz"))
    assert (await directory.connect_carrier(tenant.id, vonage)).active_carrier == "vonage"
    opened = await directory.carrier_credentials(tenant.id)
    assert opened == vonage
    assert isinstance(opened, VonageCredentials)
    assert opened.signature_secret is not None
    assert opened.signature_secret.reveal() == "sig-secret-xyz"
    assert (await directory.disconnect_carrier(tenant.id)).active_carrier is None
    with pytest.raises(NotFoundError, match="no carrier connected"):
        await directory.carrier_credentials(tenant.id)


async def test_credentials_are_encrypted_at_rest(directory: Directory, engine: AsyncEngine) -> None:
    tenant = await _tenant(directory)
    plivo = PlivoCredentials("MAXXXXXXXXXXXXXXXXXX", Secret("plivo-token-canary-77"))
    await directory.connect_carrier(tenant.id, plivo)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(schema.carrier_credentials).where(
                    schema.carrier_credentials.c.tenant_id == tenant.id
                )
            )
        ).one()
    assert b"plivo-token-canary-77" not in bytes(row.secret_ciphertext)
    assert row.account_id == "MAXXXXXXXXXXXXXXXXXX"


@pytest.mark.parametrize(
    ("credentials", "field"),
    [
        (TwilioCredentials("AC123", Secret("token-token")), "twilio.account_id"),
        (TwilioCredentials(TWILIO_SID, Secret("short")), "twilio.auth_token"),
        (PlivoCredentials("MA1", Secret("plivo-token")), "plivo.account_id"),
        (VonageCredentials("abcd1234", Secret("has space in it")), "vonage.api_secret"),
    ],
)
async def test_malformed_credentials_are_refused_and_write_nothing(
    directory: Directory, engine: AsyncEngine, credentials: TwilioCredentials, field: str
) -> None:
    tenant = await _tenant(directory)
    before = await row_counts(engine)
    with pytest.raises(ValidationError, match=re.escape(field)):
        await directory.connect_carrier(tenant.id, credentials)
    assert await row_counts(engine) == before
    assert (await directory.get_tenant(tenant.id)).active_carrier is None


# -- agents ----------------------------------------------------------------------


async def test_agent_defaults_and_extra_fields_round_trip(directory: Directory) -> None:
    tenant = await _tenant(directory)
    extra = {"voice": "alloy", "language": "en-US", "features": {"recording_enabled": True}}
    agent = await directory.create_agent(tenant.id, name="Front desk", extra=extra)
    assert agent.max_call_duration_s == 600
    assert agent.role is Role.OPERATOR
    assert agent.pipeline == "echo"
    assert agent.builtin
    assert agent.published is False
    assert agent.barge_in is BargeIn.ON
    assert agent.extra == extra
    assert await directory.get_agent(tenant.id, agent.id) == agent
    assert await directory.list_agents(tenant.id) == [agent]


@pytest.mark.parametrize("duration", [30, 7200])
async def test_max_call_duration_bounds_are_accepted(directory: Directory, duration: int) -> None:
    tenant = await _tenant(directory)
    agent = await directory.create_agent(tenant.id, name="a", max_call_duration_s=duration)
    assert agent.max_call_duration_s == duration


@pytest.mark.parametrize("duration", [29, 7201, 0, -600, 600.0, True])
async def test_max_call_duration_out_of_range_is_an_error_never_clamped(
    directory: Directory, engine: AsyncEngine, duration: object
) -> None:
    tenant = await _tenant(directory)
    agent = await directory.create_agent(tenant.id, name="a", max_call_duration_s=900)
    before = await row_counts(engine)
    with pytest.raises(ValidationError, match=r"max_call_duration_s: expected an integer 30-7200"):
        await directory.create_agent(tenant.id, name="b", max_call_duration_s=duration)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_call_duration_s"):
        await directory.update_agent(tenant.id, agent.id, max_call_duration_s=duration)
    assert await row_counts(engine) == before
    assert (await directory.get_agent(tenant.id, agent.id)).max_call_duration_s == 900


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"role": "manager"}, "role"),
        ({"barge_in": "sometimes"}, "barge_in"),
        ({"pipeline": "http://agent.example.com"}, "pipeline"),
        ({"pipeline": "parrot"}, "pipeline"),
        ({"pipeline": WS_URL}, "pipeline_secret"),
        ({"pipeline": WS_URL, "pipeline_secret": Secret("x" * 31)}, "pipeline_secret"),
        ({"pipeline": "echo", "pipeline_secret": AGENT_SECRET}, "pipeline_secret"),
        ({"extra": {"bad": float("nan")}}, "extra"),
        ({"extra": {1: "x"}}, "extra"),
        ({"name": ""}, "name"),
    ],
)
async def test_invalid_agent_fields_name_the_field_and_write_nothing(
    directory: Directory, engine: AsyncEngine, kwargs: dict[str, object], field: str
) -> None:
    tenant = await _tenant(directory)
    before = await row_counts(engine)
    with pytest.raises(ValidationError) as info:
        await directory.create_agent(tenant.id, **{"name": "a", **kwargs})  # type: ignore[arg-type]
    assert info.value.field == field
    assert await row_counts(engine) == before


async def test_websocket_agent_secret_is_sealed_and_opens_for_its_tenant(
    directory: Directory,
) -> None:
    tenant = await _tenant(directory)
    agent = await directory.create_agent(
        tenant.id, name="llm", role="concierge", pipeline=WS_URL, pipeline_secret=AGENT_SECRET
    )
    assert agent.has_pipeline_secret
    assert not agent.builtin
    assert await directory.agent_pipeline_secret(tenant.id, agent.id) == AGENT_SECRET
    back = await directory.update_agent(tenant.id, agent.id, pipeline="echo")
    assert not back.has_pipeline_secret
    assert await directory.agent_pipeline_secret(tenant.id, agent.id) is None


async def test_update_and_publish_agent(directory: Directory) -> None:
    tenant = await _tenant(directory)
    agent = await directory.create_agent(tenant.id, name="draft")
    updated = await directory.update_agent(tenant.id, agent.id, name="v2", role="executive")
    assert (updated.name, updated.role, updated.published) == ("v2", Role.EXECUTIVE, False)
    assert (await directory.set_published(tenant.id, agent.id, True)).published
    assert (
        await directory.update_agent(tenant.id, agent.id, barge_in="off")
    ).barge_in is BargeIn.OFF
    with pytest.raises(ValidationError, match="not updatable"):
        await directory.update_agent(tenant.id, agent.id, published=False)
    with pytest.raises(ValidationError, match="pipeline_secret"):
        await directory.update_agent(tenant.id, agent.id, pipeline=WS_URL)  # no secret
    assert (await directory.get_agent(tenant.id, agent.id)).pipeline == "echo"


async def test_another_tenants_agent_is_not_found(directory: Directory) -> None:
    tenant, other = await _tenant(directory), await _tenant(directory)
    agent = await directory.create_agent(tenant.id, name="mine")
    with pytest.raises(NotFoundError):
        await directory.get_agent(other.id, agent.id)
    with pytest.raises(NotFoundError):
        await directory.update_agent(other.id, agent.id, name="stolen")
    with pytest.raises(NotFoundError):
        await directory.set_published(other.id, agent.id, True)
    with pytest.raises(NotFoundError):
        await directory.agent_pipeline_secret(other.id, agent.id)
    assert (await directory.get_agent(tenant.id, agent.id)).name == "mine"


# -- numbers ---------------------------------------------------------------------


async def test_number_lookup_returns_tenant_and_agent(directory: Directory) -> None:
    tenant = await _tenant(directory)
    agent = await directory.create_agent(tenant.id, name="desk", published=True)
    number = random_number()
    added, created = await directory.add_number(tenant.id, number, agent.id)
    assert created
    assert added.agent_id == agent.id
    route = await directory.resolve_number(number)
    assert route.tenant == tenant
    assert route.agent == agent
    assert await directory.list_numbers(tenant.id) == [added]


async def test_number_without_agent_resolves_to_no_agent(directory: Directory) -> None:
    tenant = await _tenant(directory)
    number = random_number()
    await directory.add_number(tenant.id, number)
    route = await directory.resolve_number(number)
    assert (route.tenant.id, route.agent) == (tenant.id, None)


async def test_attach_detach_and_re_register_a_number(directory: Directory) -> None:
    tenant = await _tenant(directory)
    first = await directory.create_agent(tenant.id, name="first")
    second = await directory.create_agent(tenant.id, name="second")
    number = random_number()
    await directory.add_number(tenant.id, number)
    assert (await directory.attach_number(tenant.id, number, first.id)).agent_id == first.id
    again, created = await directory.add_number(tenant.id, number, second.id)
    assert (created, again.agent_id) == (False, second.id)
    assert (await directory.attach_number(tenant.id, number, None)).agent_id is None
    await directory.remove_number(tenant.id, number)
    with pytest.raises(NotFoundError):
        await directory.resolve_number(number)


async def test_number_is_unique_across_tenants(directory: Directory, engine: AsyncEngine) -> None:
    owner, intruder = await _tenant(directory), await _tenant(directory)
    number = random_number()
    await directory.add_number(owner.id, number)
    before = await row_counts(engine)
    with pytest.raises(ConflictError, match="another tenant"):
        await directory.add_number(intruder.id, number)
    for attempt in (
        directory.attach_number(intruder.id, number, None),
        directory.remove_number(intruder.id, number),
    ):
        with pytest.raises(NotFoundError):
            await attempt
    assert await row_counts(engine) == before
    assert (await directory.resolve_number(number)).tenant.id == owner.id


async def test_number_cannot_point_at_another_tenants_agent(
    directory: Directory, engine: AsyncEngine
) -> None:
    tenant, other = await _tenant(directory), await _tenant(directory)
    foreign = await directory.create_agent(other.id, name="theirs")
    number = random_number()
    before = await row_counts(engine)
    with pytest.raises(NotFoundError, match="agent"):
        await directory.add_number(tenant.id, number, foreign.id)
    assert await row_counts(engine) == before
    await directory.add_number(tenant.id, number)
    with pytest.raises(NotFoundError, match="agent"):
        await directory.attach_number(tenant.id, number, foreign.id)
    assert (await directory.resolve_number(number)).agent is None


@pytest.mark.parametrize("bad", ["14155550100", "+0155", "+1", "+1234567890123456", "+1 415 555"])
async def test_numbers_must_be_e164(directory: Directory, engine: AsyncEngine, bad: str) -> None:
    tenant = await _tenant(directory)
    before = await row_counts(engine)
    with pytest.raises(ValidationError, match=r"number: expected E\.164"):
        await directory.add_number(tenant.id, bad)
    with pytest.raises(ValidationError):
        await directory.resolve_number(bad)
    assert await row_counts(engine) == before


async def test_unregistered_number_is_not_found(directory: Directory) -> None:
    with pytest.raises(NotFoundError, match="not registered"):
        await directory.resolve_number(random_number())


async def test_resolve_number_sees_agent_changes_at_once(
    directory: Directory,
) -> None:
    # The answer path reads the agent through the number each time: a publish shows up.
    tenant = await _tenant(directory)
    agent = await directory.create_agent(tenant.id, name="desk")
    number = random_number()
    await directory.add_number(tenant.id, number, agent.id)
    route = await directory.resolve_number(number)
    assert route.agent is not None
    assert not route.agent.published
    await directory.set_published(tenant.id, agent.id, True)
    route = await directory.resolve_number(number)
    assert route.agent is not None
    assert route.agent.published


async def test_resolve_number_is_one_query(directory: Directory, engine: AsyncEngine) -> None:
    tenant = await _tenant(directory)
    agent = await directory.create_agent(tenant.id, name="hot path", published=True)
    number = random_number()
    await directory.add_number(tenant.id, number, agent.id)
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            statements.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        route = await directory.resolve_number(number)
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert route.agent == agent
    assert len(statements) == 1
    assert "secret_ciphertext" not in statements[0]
