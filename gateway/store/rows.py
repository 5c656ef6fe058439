"""Row helpers shared by the directory's modules (:mod:`gateway.store.directory`,
:mod:`gateway.store.agents`, :mod:`gateway.store.api_keys`).

Kept in one place so the tenant check and the text rule cannot drift apart between the
parts of :class:`~gateway.store.directory.Directory`.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.errors import NotFoundError, ValidationError
from gateway.store.sql import schema

__all__ = ["checked_text", "tenant_exists"]


async def tenant_exists(conn: AsyncConnection, tenant_id: str) -> None:
    """Raise NotFoundError unless the tenant exists (inside the caller's transaction)."""
    query = sa.select(schema.tenants.c.id).where(schema.tenants.c.id == tenant_id)
    if (await conn.execute(query)).first() is None:
        raise NotFoundError(f"tenant {tenant_id}: not found")


def checked_text(field_name: str, value: object, max_len: int) -> str:
    """``value`` stripped, if it is non-blank text of at most ``max_len`` characters.

    Raises:
        ValidationError: naming ``field_name`` and the expected length.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ValidationError(field_name, f"expected 1-{max_len} characters of text")
    return value.strip()
