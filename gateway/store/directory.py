"""The directory: tenants, API keys, carrier credentials, agents and numbers (SQL).

Rules every method keeps:

* Everything is scoped by tenant: asking for another tenant's agent, number or key
  raises :class:`~gateway.errors.NotFoundError`, exactly as if it did not exist.
* Invalid input raises :class:`~gateway.errors.ValidationError` before any write, and
  every write runs in one transaction, so a refused operation leaves no row behind.
* Secrets are sealed by :class:`~gateway.store.secrets.Keyring` before they reach SQL.

Agents are in :mod:`gateway.store.agents` and API keys (with :func:`hash_api_key`,
re-exported here) in :mod:`gateway.store.api_keys`: the same class, split for size into
mixins; row helpers they share are in :mod:`gateway.store.rows`. The answer-time lookup
:meth:`Directory.resolve_number` is one query.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import ConflictError, NotFoundError, ValidationError
from gateway.store import agents as agent_rows
from gateway.store.agents import AgentMixin
from gateway.store.api_keys import ApiKeyMixin, hash_api_key
from gateway.store.models import (
    CarrierAccount,
    CarrierCredentials,
    Number,
    NumberRoute,
    PlivoCredentials,
    Tenant,
    TwilioCredentials,
    VonageCredentials,
    validate_e164,
)
from gateway.store.rows import checked_text
from gateway.store.secrets import Keyring, Sealed, Secret
from gateway.store.sql import schema
from gateway.store.sql.engine import db_errors, insert_ignore, read_tx, wall_clock_ms, write_tx
from gateway.webhooks import events, outbox

__all__ = ["CARRIER_CREDENTIALS", "Directory", "check_credentials", "hash_api_key"]

CARRIER_CREDENTIALS: dict[str, type[CarrierCredentials]] = {
    cls.carrier: cls for cls in (TwilioCredentials, PlivoCredentials, VonageCredentials)
}
"""Credential class of each supported carrier, by carrier name."""

_MAX_CONCURRENT_CALLS = 100_000


def _route_statement() -> sa.Select[Any]:
    """Number → tenant and agent in one query, bound ``number`` (agent secrets left out)."""
    n, t, a = schema.numbers, schema.tenants, schema.agents
    return (
        sa.select(n.c.number, *[c.label(f"t_{c.name}") for c in t.c])
        .add_columns(*[c.label(f"a_{c.name}") for c in a.c if c.name != "secret_ciphertext"])
        .select_from(n.join(t, t.c.id == n.c.tenant_id).outerjoin(a, a.c.id == n.c.agent_id))
        .where(n.c.number == sa.bindparam("number", type_=n.c.number.type))
    )


def _credentials_statement() -> sa.Select[Any]:
    """The tenant's active carrier's sealed credentials, bound ``tid``."""
    table, tenants = schema.carrier_credentials, schema.tenants
    return (
        sa.select(table)
        .join(tenants, tenants.c.id == table.c.tenant_id)
        .where(table.c.tenant_id == sa.bindparam("tid", type_=table.c.tenant_id.type))
        .where(table.c.carrier == tenants.c.active_carrier)
    )


# Built once: on every call's set-up, building these cost more CPU than running them.
_ROUTE = _route_statement()
_CREDENTIALS = _credentials_statement()
_TENANT = sa.select(schema.tenants).where(
    schema.tenants.c.id == sa.bindparam("tid", type_=schema.tenants.c.id.type)
)


class Directory(AgentMixin, ApiKeyMixin):
    """Tenants, keys, carrier credentials, agents and numbers over one SQL engine.

    Args:
        engine: an engine from :func:`gateway.store.sql.engine.create_engine`, migrated.
        keyring: master keys for secrets at rest.
        clock: wall-clock milliseconds (injected so tests control time).
    """

    def __init__(
        self, engine: AsyncEngine, keyring: Keyring, clock: Callable[[], int] = wall_clock_ms
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.clock = clock

    # -- tenants -----------------------------------------------------------------

    async def create_tenant(
        self, name: str, max_concurrent_calls: int | None = None, tenant_id: str | None = None
    ) -> Tenant:
        """Create a tenant (no carrier, balance 0: top it up through the ledger).

        ``tenant_id`` is for well-known tenants (the demo); normally a UUID4 is chosen.
        """
        tenant = Tenant(
            id=tenant_id or str(uuid.uuid4()),
            name=checked_text("name", name, 200),
            max_concurrent_calls=_limit(max_concurrent_calls),
            active_carrier=None,
            created_at_ms=self.clock(),
        )
        with db_errors("create tenant"):
            async with write_tx(self.engine) as conn:
                await conn.execute(sa.insert(schema.tenants).values(**_tenant_values(tenant)))
        return tenant

    async def get_tenant(self, tenant_id: str) -> Tenant:
        """The tenant with this id. Raises NotFoundError."""
        with db_errors("get tenant"):
            async with read_tx(self.engine) as conn:
                return await _tenant(conn, tenant_id)

    async def list_tenants(self) -> list[Tenant]:
        """All tenants, oldest first."""
        query = sa.select(schema.tenants).order_by(schema.tenants.c.created_at_ms)
        with db_errors("list tenants"):
            async with read_tx(self.engine) as conn:
                return [_tenant_from(row) for row in (await conn.execute(query)).all()]

    async def set_max_concurrent_calls(self, tenant_id: str, limit: int | None) -> Tenant:
        """Set (or with None, remove) the tenant's concurrent call cap."""
        value = _limit(limit)
        with db_errors("set limit"):
            async with write_tx(self.engine) as conn:
                await _update_tenant(conn, tenant_id, max_concurrent_calls=value)
                return await _tenant(conn, tenant_id)

    # -- carrier credentials -----------------------------------------------------

    async def connect_carrier(
        self,
        tenant_id: str,
        credentials: CarrierCredentials,
        *,
        account_name: str | None = None,
        account_country: str | None = None,
    ) -> Tenant:
        """Store the tenant's credentials for a carrier and make it the active one.

        One active carrier per tenant: connecting another replaces it (and its stored
        credentials), as docs.rymi.live/api/telephony.html describes. ``account_name`` and
        ``account_country`` are what the carrier's REST API reported (shown by the API).
        """
        account_name = None if account_name is None else account_name.strip()[:200] or None
        account_country = None if account_country is None else account_country.strip()[:8] or None
        _validate_credentials(credentials)
        carrier = credentials.carrier
        sealed = self.keyring.seal(
            json.dumps(credentials.secret_fields()), tenant_id, f"carrier:{carrier}"
        )
        table = schema.carrier_credentials
        with db_errors("connect carrier"):
            async with write_tx(self.engine) as conn:
                await _tenant(conn, tenant_id)
                await conn.execute(sa.delete(table).where(table.c.tenant_id == tenant_id))
                await conn.execute(
                    sa.insert(table).values(
                        tenant_id=tenant_id,
                        carrier=carrier,
                        account_id=credentials.account_id,
                        secret_key_id=sealed.key_id,
                        secret_ciphertext=sealed.blob,
                        updated_at_ms=self.clock(),
                        account_name=account_name,
                        account_country=account_country,
                    )
                )
                await _update_tenant(conn, tenant_id, active_carrier=carrier)
                return await _tenant(conn, tenant_id)

    async def disconnect_carrier(self, tenant_id: str) -> Tenant:
        """Forget the tenant's carrier credentials; it has no active carrier after this."""
        table = schema.carrier_credentials
        with db_errors("disconnect carrier"):
            async with write_tx(self.engine) as conn:
                await _update_tenant(conn, tenant_id, active_carrier=None)
                await conn.execute(sa.delete(table).where(table.c.tenant_id == tenant_id))
                return await _tenant(conn, tenant_id)

    async def carrier_account(self, tenant_id: str) -> CarrierAccount | None:
        """The tenant's active carrier account (no secrets), or None if none is connected.

        Raises:
            NotFoundError: no such tenant.
        """
        table, tenants = schema.carrier_credentials, schema.tenants
        query = (
            sa.select(table)
            .join(tenants, tenants.c.id == table.c.tenant_id)
            .where(table.c.tenant_id == tenant_id, table.c.carrier == tenants.c.active_carrier)
        )
        with db_errors("get carrier account"):
            async with read_tx(self.engine) as conn:
                await _tenant(conn, tenant_id)
                row = (await conn.execute(query)).first()
        if row is None:
            return None
        return CarrierAccount(
            carrier=str(row.carrier),
            account_id=str(row.account_id),
            account_name=row.account_name,
            account_country=row.account_country,
            connected_at_ms=int(row.updated_at_ms),
        )

    async def carrier_credentials(self, tenant_id: str) -> CarrierCredentials:
        """The active carrier's credentials, opened. Raises NotFoundError, SecretError."""
        with db_errors("get carrier credentials"):
            async with read_tx(self.engine) as conn:
                row = (await conn.execute(_CREDENTIALS, {"tid": tenant_id})).first()
        if row is None:
            raise NotFoundError(f"tenant {tenant_id}: no carrier connected")
        carrier = str(row.carrier)
        sealed = Sealed(row.secret_key_id, row.secret_ciphertext)
        opened = self.keyring.open(sealed, tenant_id, f"carrier:{carrier}").reveal()
        fields = {name: Secret(value) for name, value in json.loads(opened).items()}
        return CARRIER_CREDENTIALS[carrier].from_fields(str(row.account_id), fields)

    # -- numbers -----------------------------------------------------------------

    async def add_number(
        self, tenant_id: str, number: str, agent_id: str | None = None
    ) -> tuple[Number, bool]:
        """Register a number to the tenant; returns it and whether it was new.

        Registering a number the tenant already has updates its agent when one is given.

        Raises:
            ValidationError: not E.164.
            ConflictError: the number belongs to another tenant.
            NotFoundError: no such tenant, or the agent is not the tenant's.
        """
        validate_e164(number)
        values: dict[str, object] = {"number": number, "tenant_id": tenant_id, "agent_id": agent_id}
        with db_errors("add number"):
            async with write_tx(self.engine) as conn:
                await _tenant(conn, tenant_id)
                if agent_id is not None:
                    await agent_rows.agent_row(conn, tenant_id, agent_id)
                values["created_at_ms"] = self.clock()
                created = await insert_ignore(conn, schema.numbers, values)
                row = await _number_row(conn, number)
                if row.tenant_id != tenant_id:
                    raise ConflictError(f"number {number}: registered to another tenant")
                previous = None if created else row.agent_id
                if not created and agent_id is not None:
                    await _set_number_agent(conn, number, agent_id)
                    row = await _number_row(conn, number)
                await _assigned_event(conn, tenant_id, number, agent_id, previous, self.clock())
        return _number_from(row), created

    async def attach_number(self, tenant_id: str, number: str, agent_id: str | None) -> Number:
        """Attach one of the tenant's numbers to one of its agents (None detaches)."""
        validate_e164(number)
        with db_errors("attach number"):
            async with write_tx(self.engine) as conn:
                row = await _number_row(conn, number, tenant_id)
                previous = row.agent_id
                if agent_id is not None:
                    await agent_rows.agent_row(conn, tenant_id, agent_id)
                await _set_number_agent(conn, number, agent_id)
                row = await _number_row(conn, number, tenant_id)
                await _assigned_event(conn, tenant_id, number, agent_id, previous, self.clock())
        return _number_from(row)

    async def remove_number(self, tenant_id: str, number: str) -> None:
        """Remove one of the tenant's numbers. Raises NotFoundError."""
        validate_e164(number)
        table = schema.numbers
        with db_errors("remove number"):
            async with write_tx(self.engine) as conn:
                await _number_row(conn, number, tenant_id)
                await conn.execute(sa.delete(table).where(table.c.number == number))

    async def list_numbers(self, tenant_id: str) -> list[Number]:
        """The tenant's numbers, in number order."""
        table = schema.numbers
        query = sa.select(table).where(table.c.tenant_id == tenant_id).order_by(table.c.number)
        with db_errors("list numbers"):
            async with read_tx(self.engine) as conn:
                await _tenant(conn, tenant_id)
                return [_number_from(row) for row in (await conn.execute(query)).all()]

    async def resolve_number(self, number: str) -> NumberRoute:
        """The called number's tenant and agent, in one query (the call-answer hot path).

        Raises:
            ValidationError: not E.164.
            NotFoundError: the number is not registered.
        """
        validate_e164(number)
        with db_errors("resolve number"):
            async with read_tx(self.engine) as conn:
                row = (await conn.execute(_ROUTE, {"number": number})).first()
        if row is None:
            raise NotFoundError(f"number {number}: not registered")
        mapping = row._mapping
        tenant = _tenant_from_prefixed(mapping, "t_")
        agent = None if mapping["a_id"] is None else agent_rows.agent_from_prefixed(mapping, "a_")
        return NumberRoute(number=number, tenant=tenant, agent=agent)


# -- webhook events (written in the cause's transaction: gateway/webhooks/outbox.py) --


async def _assigned_event(
    conn: AsyncConnection,
    tenant_id: str,
    number: str,
    agent_id: str | None,
    previous: object,
    at_ms: int,
) -> None:
    # A number newly given an agent (or moved to another one); detaching is not "assigned".
    if agent_id is None or agent_id == previous:
        return
    data = events.number_assigned(number, agent_id, None if previous is None else str(previous))
    await outbox.enqueue(conn, tenant_id, "agent.number_assigned", data, at_ms)


# -- row helpers -----------------------------------------------------------------


async def _tenant(conn: AsyncConnection, tenant_id: str) -> Tenant:
    row = (await conn.execute(_TENANT, {"tid": tenant_id})).first()
    if row is None:
        raise NotFoundError(f"tenant {tenant_id}: not found")
    return _tenant_from(row)


async def _update_tenant(conn: AsyncConnection, tenant_id: str, **values: object) -> None:
    stmt = sa.update(schema.tenants).where(schema.tenants.c.id == tenant_id).values(**values)
    if (await conn.execute(stmt)).rowcount != 1:
        raise NotFoundError(f"tenant {tenant_id}: not found")


async def _number_row(
    conn: AsyncConnection, number: str, tenant_id: str | None = None
) -> sa.Row[tuple[object, ...]]:
    table = schema.numbers
    query = sa.select(table).where(table.c.number == number)
    row = (await conn.execute(query)).first()
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise NotFoundError(f"number {number}: not found")
    return row


async def _set_number_agent(conn: AsyncConnection, number: str, agent_id: str | None) -> None:
    table = schema.numbers
    await conn.execute(sa.update(table).where(table.c.number == number).values(agent_id=agent_id))


def _tenant_values(tenant: Tenant) -> dict[str, object]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "max_concurrent_calls": tenant.max_concurrent_calls,
        "active_carrier": tenant.active_carrier,
        "created_at_ms": tenant.created_at_ms,
    }


def _tenant_from(row: sa.Row[tuple[object, ...]]) -> Tenant:
    return _tenant_from_prefixed(row._mapping, "")


def _tenant_from_prefixed(mapping: sa.RowMapping, prefix: str) -> Tenant:
    return Tenant(
        id=mapping[f"{prefix}id"],
        name=mapping[f"{prefix}name"],
        max_concurrent_calls=mapping[f"{prefix}max_concurrent_calls"],
        active_carrier=mapping[f"{prefix}active_carrier"],
        created_at_ms=mapping[f"{prefix}created_at_ms"],
    )


def _number_from(row: sa.Row[tuple[object, ...]]) -> Number:
    m = row._mapping
    return Number(m["number"], m["tenant_id"], m["agent_id"], m["created_at_ms"])


def _limit(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(
            "max_concurrent_calls", f"expected an integer 0-{_MAX_CONCURRENT_CALLS} or none"
        )
    if not 0 <= value <= _MAX_CONCURRENT_CALLS:
        raise ValidationError(
            "max_concurrent_calls",
            f"expected an integer 0-{_MAX_CONCURRENT_CALLS} or none, got {value}",
        )
    return value


_ACCOUNT_ID_SHAPES = {
    # Twilio account SIDs are "AC" + 32 hex digits (twilio.com/docs/glossary/what-is-a-sid).
    "twilio": (r"AC[0-9a-fA-F]{32}", "AC followed by 32 hex digits"),
    "plivo": (r"[A-Za-z0-9]{10,40}", "10-40 letters or digits"),
    "vonage": (r"[A-Za-z0-9]{6,40}", "6-40 letters or digits"),
}


def check_credentials(credentials: CarrierCredentials) -> None:
    """Check the credentials' shape (as :meth:`Directory.connect_carrier` does) without
    storing anything. Raises ValidationError naming the field; never echoes a secret."""
    _validate_credentials(credentials)


def _validate_credentials(credentials: CarrierCredentials) -> None:
    pattern, shape = _ACCOUNT_ID_SHAPES[credentials.carrier]
    if not re.fullmatch(pattern, credentials.account_id):
        raise ValidationError(f"{credentials.carrier}.account_id", f"expected {shape}")
    for name, value in credentials.secret_fields().items():
        if not 8 <= len(value) <= 256 or any(ch.isspace() for ch in value):
            # Never echo the value: it is a secret.
            raise ValidationError(
                f"{credentials.carrier}.{name}", "expected 8-256 non-space characters"
            )
