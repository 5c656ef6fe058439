"""Secrets at rest: AES-256-GCM under the master keys, bound to tenant and field.

Scheme (reliability.md section 4; OWASP Cryptographic Storage; NIST SP 800-38D):

* Each secret is sealed with ``AESGCM(master_key)`` and a fresh random 96-bit nonce; the
  stored blob is ``nonce || ciphertext+tag`` next to the sealing key's id.
* The associated data is ``rymi:v1|<tenant id>|<field>`` (``field`` e.g.
  ``carrier:twilio`` or ``agent:<agent id>:pipeline_secret``). It is authenticated, not
  stored: a ciphertext copied to another tenant's row (or another field) fails the tag
  check and raises :class:`~gateway.errors.SecretError`.
* The key id is derived from the key (first 12 hex digits of a SHA-256 over a label and
  the key), so operators configure keys only, never ids, and a row says which key sealed
  it. New secrets use the first (newest) key; any configured key can open.
  :func:`rotate` re-seals every row under the newest key; an old key can be dropped from
  ``RYMI_MASTER_KEYS`` once :func:`key_usage` shows no row under it.

Plaintext only lives in :class:`Secret` objects, whose ``repr``/``str`` are ``'***'``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import MASTER_KEY_BYTES, Settings, parse_master_keys
from gateway.errors import ConfigError, SecretError
from gateway.store.sql import schema
from gateway.store.sql.engine import db_errors, read_tx, write_tx

__all__ = [
    "Keyring",
    "Rotation",
    "Sealed",
    "Secret",
    "generate_master_key",
    "key_usage",
    "load_keyring",
    "rotate",
]

log = logging.getLogger("gateway.store.secrets")

_NONCE_BYTES = 12  # 96-bit nonce, the size SP 800-38D recommends for GCM
DEV_KEY_FILE = "master.key"


class Secret:
    """A secret string that never shows itself in logs, reprs or messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plaintext; call it only at the point of use (signing, verifying)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(Secret)  # all equal-looking; secrets are not meant as dict keys

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("Secret values cannot be pickled")


@dataclass(frozen=True, slots=True)
class Sealed:
    """An encrypted value as stored: the sealing key's id and ``nonce || ciphertext``."""

    key_id: str
    blob: bytes = field(repr=False)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"rymi-master-key-id:" + key).hexdigest()[:12]


def _aad(tenant_id: str, field_name: str) -> bytes:
    return f"rymi:v1|{tenant_id}|{field_name}".encode()


class Keyring:
    """The master keys, newest first. Seals with the newest, opens with any."""

    __slots__ = ("_aeads", "newest_id")

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ConfigError("RYMI_MASTER_KEYS", "at least one master key is needed")
        if any(len(k) != MASTER_KEY_BYTES for k in keys):
            raise ConfigError("RYMI_MASTER_KEYS", f"every key must be {MASTER_KEY_BYTES} bytes")
        self._aeads = {_key_id(k): AESGCM(k) for k in keys}
        self.newest_id = _key_id(keys[0])

    def __repr__(self) -> str:
        return f"Keyring(key_ids={list(self._aeads)})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of the configured keys, newest first."""
        return tuple(self._aeads)

    def seal(self, plaintext: str, tenant_id: str, field_name: str) -> Sealed:
        """Encrypt ``plaintext`` under the newest key, bound to tenant and field."""
        nonce = os.urandom(_NONCE_BYTES)
        aead = self._aeads[self.newest_id]
        blob = nonce + aead.encrypt(nonce, plaintext.encode(), _aad(tenant_id, field_name))
        return Sealed(self.newest_id, blob)

    def open(self, sealed: Sealed, tenant_id: str, field_name: str) -> Secret:
        """Decrypt a sealed value for ``tenant_id`` and ``field_name``.

        Raises:
            SecretError: the key is not configured, or the value was sealed for another
                tenant or field, or was tampered with.
        """
        aead = self._aeads.get(sealed.key_id)
        if aead is None:
            raise SecretError(
                f"{field_name}: sealed under master key id {sealed.key_id}, which is not "
                "in RYMI_MASTER_KEYS"
            )
        nonce, body = sealed.blob[:_NONCE_BYTES], sealed.blob[_NONCE_BYTES:]
        try:
            plaintext = aead.decrypt(nonce, body, _aad(tenant_id, field_name))
        except (InvalidTag, ValueError):
            raise SecretError(
                f"{field_name}: does not decrypt for this tenant (moved or tampered with)"
            ) from None
        return Secret(plaintext.decode())


def generate_master_key() -> str:
    """A new random master key, url-safe base64 (the ``RYMI_MASTER_KEYS`` entry shape)."""
    return base64.urlsafe_b64encode(os.urandom(MASTER_KEY_BYTES)).decode("ascii")


def load_keyring(settings: Settings) -> Keyring:
    """The keyring from settings, or in dev mode from ``<data_dir>/master.key``.

    Dev mode (``RYMI_MASTER_KEYS`` unset) creates the key file once with mode 0600 and
    logs a warning every time: it is fine for one laptop, not for a fleet, whose
    instances must share keys.
    """
    if settings.master_keys:
        return Keyring(settings.master_keys)
    path = Path(settings.data_dir) / DEV_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_master_key() + "\n")
    log.warning(
        "RYMI_MASTER_KEYS is not set: secrets are encrypted with the DEV key file %s. "
        "Losing it loses every stored credential; set RYMI_MASTER_KEYS in production.",
        path,
    )
    return Keyring(parse_master_keys(path.read_text().strip()))


_SEALED_COLUMNS = (
    (schema.carrier_credentials, ("tenant_id", "carrier")),
    (schema.agents, ("id",)),
    (schema.webhook_endpoints, ("id",)),
)


def _field_for(table: sa.Table, row: sa.Row[tuple[object, ...]]) -> tuple[str, str]:
    if table is schema.carrier_credentials:
        return str(row.tenant_id), f"carrier:{row.carrier}"
    if table is schema.webhook_endpoints:
        return str(row.tenant_id), f"webhook:{row.id}:secret"
    return str(row.tenant_id), f"agent:{row.id}:pipeline_secret"


async def key_usage(engine: AsyncEngine) -> Counter[str]:
    """How many stored secrets each master key id has sealed."""
    usage: Counter[str] = Counter()
    with db_errors("count secrets by key"):
        async with read_tx(engine) as conn:
            for table, _ in _SEALED_COLUMNS:
                query = (
                    sa.select(table.c.secret_key_id, sa.func.count())
                    .where(table.c.secret_key_id.is_not(None))
                    .group_by(table.c.secret_key_id)
                )
                for key_id, count in (await conn.execute(query)).all():
                    usage[str(key_id)] += int(count)
    return usage


@dataclass(frozen=True, slots=True)
class Rotation:
    """Outcome of :func:`rotate`."""

    resealed: int
    """Secrets now sealed under the newest key."""
    unreadable: tuple[str, ...]
    """Rows that did not open (key missing, moved or tampered with), e.g.
    ``carrier_credentials tenant_id=... carrier=twilio``. They keep their old key."""


async def rotate(engine: AsyncEngine, keyring: Keyring, batch: int = 200) -> Rotation:
    """Re-seal every secret not under the newest key.

    Walks each table in primary-key order, a batch per transaction; an update only
    applies if the row is still under the key it was read with, so concurrent rotations
    or edits are safe. A row that does not open is reported and skipped, so one bad row
    cannot block the rotation of all the others (and its old key must stay configured).
    """
    resealed, unreadable = 0, []
    for table, pk in _SEALED_COLUMNS:
        after: tuple[object, ...] | None = None
        while True:
            done, bad, after = await _rotate_batch(engine, keyring, table, pk, batch, after)
            resealed += done
            unreadable += bad
            if after is None:
                break
    if resealed:
        log.info("re-sealed %d secrets under master key %s", resealed, keyring.newest_id)
    if unreadable:
        log.warning("%d secrets did not open and keep their old key", len(unreadable))
    return Rotation(resealed, tuple(unreadable))


async def _rotate_batch(
    engine: AsyncEngine,
    keyring: Keyring,
    table: sa.Table,
    pk: tuple[str, ...],
    batch: int,
    after: tuple[object, ...] | None,
) -> tuple[int, list[str], tuple[object, ...] | None]:
    key = sa.tuple_(*(table.c[name] for name in pk))
    query = (
        sa.select(table)
        .where(table.c.secret_key_id.is_not(None), table.c.secret_key_id != keyring.newest_id)
        .order_by(*(table.c[name] for name in pk))
        .limit(batch)
    )
    if after is not None:
        query = query.where(key > sa.tuple_(*after))
    done, bad = 0, []
    with db_errors("rotate secrets"):
        async with write_tx(engine) as conn:
            rows = (await conn.execute(query)).all()
            for row in rows:
                ids = tuple(getattr(row, name) for name in pk)
                tenant_id, field_name = _field_for(table, row)
                old = Sealed(row.secret_key_id, row.secret_ciphertext)
                try:
                    plaintext = keyring.open(old, tenant_id, field_name).reveal()
                except SecretError:
                    names = " ".join(f"{n}={v}" for n, v in zip(pk, ids, strict=True))
                    bad.append(f"{table.name} {names}")
                    continue
                new = keyring.seal(plaintext, tenant_id, field_name)
                match = [table.c[name] == value for name, value in zip(pk, ids, strict=True)]
                result = await conn.execute(
                    sa.update(table)
                    .where(*match, table.c.secret_key_id == old.key_id)
                    .values(secret_key_id=new.key_id, secret_ciphertext=new.blob)
                )
                done += result.rowcount
    last = tuple(getattr(rows[-1], name) for name in pk) if len(rows) == batch else None
    return done, bad, last
