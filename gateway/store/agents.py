"""Agents in the directory: validation, storage and the sealed pipeline secret.

An agent names its pipeline: a built-in agent (``echo``) or the ``ws://``/``wss://`` URL
of an agent speaking the gateway's agent protocol, with a shared secret (sealed at rest,
bound to the tenant and the agent id). ``max_call_duration_s`` must lie in 30-7200 s
(default 600 s); out of range is a :class:`~gateway.errors.ValidationError`, never
clamped. Fields the gateway does not interpret are kept as a JSON object (``extra``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import NotFoundError, ValidationError
from gateway.metering import Role
from gateway.store.models import (
    BUILTIN_PIPELINES,
    DEFAULT_MAX_CALL_DURATION_S,
    MAX_CALL_DURATION_RANGE_S,
    Agent,
    BargeIn,
)
from gateway.store.rows import checked_text, tenant_exists
from gateway.store.secrets import Keyring, Sealed, Secret
from gateway.store.sql import schema
from gateway.store.sql.engine import db_errors, read_tx, write_tx

__all__ = ["AgentMixin", "agent_from_prefixed", "agent_row"]

_MAX_EXTRA_BYTES = 16_384
_SECRET_LEN = (32, 256)  # docs/agent-protocol.md 1.1: at least 32 bytes (HS256 key)
_UPDATABLE = frozenset(
    {"name", "role", "max_call_duration_s", "pipeline", "pipeline_secret", "barge_in", "extra"}
)


def _secret_field(agent_id: str) -> str:
    return f"agent:{agent_id}:pipeline_secret"


class AgentMixin:
    """Agent methods of :class:`~gateway.store.directory.Directory`."""

    engine: AsyncEngine
    keyring: Keyring
    clock: Callable[[], int]

    async def create_agent(
        self,
        tenant_id: str,
        *,
        name: str,
        role: Role | str = Role.OPERATOR,
        pipeline: str = "echo",
        pipeline_secret: Secret | None = None,
        max_call_duration_s: int = DEFAULT_MAX_CALL_DURATION_S,
        barge_in: BargeIn | str = BargeIn.ON,
        published: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> Agent:
        """Create an agent (a draft unless ``published``). Raises ValidationError, NotFoundError."""
        agent_id = str(uuid.uuid4())
        values = _validated(
            name=name,
            role=role,
            max_call_duration_s=max_call_duration_s,
            barge_in=barge_in,
            extra=extra or {},
        )
        values["pipeline"] = _pipeline(pipeline, pipeline_secret)
        values["pipeline_secret"] = pipeline_secret
        if not isinstance(published, bool):
            raise ValidationError("published", "expected true or false")
        now = self.clock()
        row = {"id": agent_id, "tenant_id": tenant_id, "published": published}
        row |= {"created_at_ms": now, "updated_at_ms": now}
        row |= self._storable(tenant_id, agent_id, values)
        with db_errors("create agent"):
            async with write_tx(self.engine) as conn:
                await tenant_exists(conn, tenant_id)
                await conn.execute(sa.insert(schema.agents).values(row))
                return agent_from_prefixed((await agent_row(conn, tenant_id, agent_id))._mapping)

    async def get_agent(self, tenant_id: str, agent_id: str) -> Agent:
        """One of the tenant's agents. Raises NotFoundError."""
        with db_errors("get agent"):
            async with read_tx(self.engine) as conn:
                return agent_from_prefixed((await agent_row(conn, tenant_id, agent_id))._mapping)

    async def list_agents(self, tenant_id: str) -> list[Agent]:
        """The tenant's agents, oldest first."""
        table = schema.agents
        query = (
            sa.select(table).where(table.c.tenant_id == tenant_id).order_by(table.c.created_at_ms)
        )
        with db_errors("list agents"):
            async with read_tx(self.engine) as conn:
                await tenant_exists(conn, tenant_id)
                return [
                    agent_from_prefixed(row._mapping) for row in (await conn.execute(query)).all()
                ]

    async def update_agent(self, tenant_id: str, agent_id: str, **changes: Any) -> Agent:
        """Change some of an agent's fields (the same names as :meth:`create_agent`).

        Switching to a URL pipeline needs ``pipeline_secret``; switching to a built-in
        one drops the stored secret.
        """
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValidationError(
                sorted(unknown)[0], f"not updatable; use one of {sorted(_UPDATABLE)}"
            )
        with db_errors("update agent"):
            async with write_tx(self.engine) as conn:
                current = agent_from_prefixed((await agent_row(conn, tenant_id, agent_id))._mapping)
                merged: dict[str, Any] = {
                    "name": current.name,
                    "role": current.role,
                    "max_call_duration_s": current.max_call_duration_s,
                    "barge_in": current.barge_in,
                    "extra": current.extra,
                } | changes
                pipeline = merged.pop("pipeline", None)
                secret = merged.pop("pipeline_secret", None)
                values = _validated(**merged)
                if pipeline is not None or secret is not None:
                    values["pipeline"] = _pipeline(pipeline or current.pipeline, secret)
                    values["pipeline_secret"] = secret
                stored = self._storable(tenant_id, agent_id, values)
                stored["updated_at_ms"] = self.clock()
                await conn.execute(
                    sa.update(schema.agents).where(schema.agents.c.id == agent_id).values(stored)
                )
                return agent_from_prefixed((await agent_row(conn, tenant_id, agent_id))._mapping)

    async def set_published(self, tenant_id: str, agent_id: str, published: bool) -> Agent:
        """Publish an agent (it then takes calls) or turn it back into a draft."""
        table = schema.agents
        stmt = (
            sa.update(table)
            .where(table.c.id == agent_id, table.c.tenant_id == tenant_id)
            .values(published=bool(published), updated_at_ms=self.clock())
        )
        with db_errors("publish agent"):
            async with write_tx(self.engine) as conn:
                if (await conn.execute(stmt)).rowcount != 1:
                    raise NotFoundError(f"agent {agent_id}: not found")
                return agent_from_prefixed((await agent_row(conn, tenant_id, agent_id))._mapping)

    async def delete_agent(self, tenant_id: str, agent_id: str) -> None:
        """Delete one of the tenant's agents. Raises NotFoundError.

        Its numbers stay registered with no agent (``SET NULL``: calls to them are then
        refused as ``agent_not_published``) and publishable keys bound to it are deleted
        (``CASCADE``). Call records keep the agent id: a CDR outlives its agent.
        """
        table = schema.agents
        stmt = sa.delete(table).where(table.c.id == agent_id, table.c.tenant_id == tenant_id)
        with db_errors("delete agent"):
            async with write_tx(self.engine) as conn:
                if (await conn.execute(stmt)).rowcount != 1:
                    raise NotFoundError(f"agent {agent_id}: not found")

    async def agent_pipeline_secret(self, tenant_id: str, agent_id: str) -> Secret | None:
        """The agent's pipeline secret, opened; None for built-in pipelines."""
        with db_errors("get agent secret"):
            async with read_tx(self.engine) as conn:
                row = await agent_row(conn, tenant_id, agent_id)
        if row.secret_ciphertext is None:
            return None
        sealed = Sealed(row.secret_key_id, row.secret_ciphertext)
        return self.keyring.open(sealed, tenant_id, _secret_field(agent_id))

    def _storable(self, tenant_id: str, agent_id: str, values: dict[str, Any]) -> dict[str, Any]:
        stored = dict(values)
        if "extra" in stored:
            stored["extra"] = json.dumps(stored["extra"], sort_keys=True)
        if "pipeline_secret" in stored:
            secret: Secret | None = stored.pop("pipeline_secret")
            sealed = (
                None
                if secret is None
                else self.keyring.seal(secret.reveal(), tenant_id, _secret_field(agent_id))
            )
            stored["secret_key_id"] = None if sealed is None else sealed.key_id
            stored["secret_ciphertext"] = None if sealed is None else sealed.blob
        return stored


async def agent_row(
    conn: AsyncConnection, tenant_id: str, agent_id: str
) -> sa.Row[tuple[object, ...]]:
    """The agent's row if it belongs to the tenant. Raises NotFoundError."""
    row = (await conn.execute(_AGENT_ROW, {"aid": agent_id, "tid": tenant_id})).first()
    if row is None:
        raise NotFoundError(f"agent {agent_id}: not found")
    return row


_AGENT_ROW = sa.select(schema.agents).where(
    schema.agents.c.id == sa.bindparam("aid", type_=schema.agents.c.id.type),
    schema.agents.c.tenant_id == sa.bindparam("tid", type_=schema.agents.c.tenant_id.type),
)
"""Built once (read on every call's set-up), bound ``aid`` and ``tid``."""


def agent_from_prefixed(mapping: sa.RowMapping | Mapping[str, Any], prefix: str = "") -> Agent:
    """Build an :class:`Agent` from a row whose agent columns carry ``prefix``."""

    def col(name: str) -> Any:
        return mapping[f"{prefix}{name}"]

    return Agent(
        id=col("id"),
        tenant_id=col("tenant_id"),
        name=col("name"),
        role=Role(col("role")),
        published=bool(col("published")),
        max_call_duration_s=col("max_call_duration_s"),
        pipeline=col("pipeline"),
        barge_in=BargeIn(col("barge_in")),
        has_pipeline_secret=col("secret_key_id") is not None,
        extra=json.loads(col("extra")),
        created_at_ms=col("created_at_ms"),
        updated_at_ms=col("updated_at_ms"),
    )


def _validated(
    *,
    name: object,
    role: object,
    max_call_duration_s: object,
    barge_in: object,
    extra: object,
) -> dict[str, Any]:
    checked_name = checked_text("name", name, 200)
    low, high = MAX_CALL_DURATION_RANGE_S
    duration = max_call_duration_s
    if not isinstance(duration, int) or isinstance(duration, bool) or not low <= duration <= high:
        raise ValidationError(
            "max_call_duration_s", f"expected an integer {low}-{high} (seconds), got {duration!r}"
        )
    return {
        "name": checked_name,
        "role": _choice(Role, "role", role).value,
        "max_call_duration_s": duration,
        "barge_in": _choice(BargeIn, "barge_in", barge_in).value,
        "extra": _extra(extra),
    }


_E = TypeVar("_E", Role, BargeIn)


def _choice(cls: type[_E], field_name: str, value: object) -> _E:
    allowed = ", ".join(member.value for member in cls)
    if not isinstance(value, str) or value not in allowed.split(", "):
        raise ValidationError(field_name, f"expected one of {allowed}, got {value!r}")
    return cls(value)


def _pipeline(pipeline: object, secret: object) -> str:
    builtins = ", ".join(sorted(BUILTIN_PIPELINES))
    if not isinstance(pipeline, str):
        raise ValidationError("pipeline", f"expected a built-in agent ({builtins}) or a URL")
    if pipeline in BUILTIN_PIPELINES:
        if secret is not None:
            raise ValidationError("pipeline_secret", "only WebSocket pipelines take a secret")
        return pipeline
    parts = urlsplit(pipeline)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or len(pipeline) > 2048:
        raise ValidationError(
            "pipeline", f"expected a built-in agent ({builtins}) or a ws:// or wss:// URL"
        )
    low, high = _SECRET_LEN
    if not isinstance(secret, Secret) or not low <= len(secret.reveal()) <= high:
        raise ValidationError(
            "pipeline_secret", f"a WebSocket pipeline needs a {low}-{high} character secret"
        )
    return pipeline


def _extra(extra: object) -> dict[str, Any]:
    if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
        raise ValidationError("extra", "expected a JSON object with string keys")
    try:
        encoded = json.dumps(dict(extra), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        raise ValidationError("extra", "expected JSON values only (no NaN)") from None
    if len(encoded.encode()) > _MAX_EXTRA_BYTES:
        raise ValidationError("extra", f"expected at most {_MAX_EXTRA_BYTES} bytes of JSON")
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded
