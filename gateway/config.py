"""Settings: one frozen dataclass, built once at start-up from ``RYMI_*`` variables.

Every field carries its unit in its docstring. :meth:`Settings.from_env` reads a mapping
(``os.environ`` in production, a plain dict in tests) and raises
:class:`~gateway.errors.ConfigError` naming the variable and the allowed range or shape;
values are never clamped. Messages about secret variables never repeat the value.

Master keys (``RYMI_MASTER_KEYS``) encrypt carrier credentials and agent secrets at rest
(see docs/state.md). When the variable is unset the gateway runs in *dev key mode*: the
store layer creates ``<data_dir>/master.key`` once (mode 0600) and logs a loud warning on
every start. A fleet must set ``RYMI_MASTER_KEYS`` on every instance.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gateway.errors import ConfigError

__all__ = ["MASTER_KEY_BYTES", "Settings", "normalize_database_url", "parse_master_keys"]

MASTER_KEY_BYTES = 32
"""Length of one master key: AES-256 (NIST SP 800-38D, 256-bit key)."""

_DEFAULT_DATA_DIR = "./rymi-data"
_DATABASE_SCHEMES = {
    # Operators paste URLs from their provider; map the plain forms to the async drivers.
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-:\[\]]+$")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway is configured with. Build it with :meth:`from_env`."""

    data_dir: Path = Path(_DEFAULT_DATA_DIR)
    """Directory for the embedded SQLite file and the dev master key (``RYMI_DATA_DIR``)."""

    database_url: str = "sqlite+aiosqlite:///rymi-data/rymi.db"
    """SQLAlchemy async URL of the directory and ledger (``RYMI_DATABASE_URL``)."""

    master_keys: tuple[bytes, ...] = field(default=(), repr=False)
    """AES-256 keys for secrets at rest, newest first (``RYMI_MASTER_KEYS``); empty = dev mode."""

    redis_url: str | None = None
    """Redis for fleet coordination (``RYMI_REDIS_URL``); None = in-process (one node)."""

    public_base_url: str | None = None
    """Base URL carriers reach us at, e.g. ``https://gw.example.com`` (``RYMI_PUBLIC_BASE_URL``)."""

    host: str = "127.0.0.1"
    """Interface to listen on (``RYMI_HOST``); containers set ``0.0.0.0``."""

    port: int = 8080
    """TCP port to listen on, 1-65535 (``RYMI_PORT``)."""

    checkpoint_interval_s: int = 5
    """Seconds between usage checkpoints of a live call, 1-60 (``RYMI_CHECKPOINT_INTERVAL_S``)."""

    reaper_stale_after_s: int = 60
    """Seconds without a checkpoint after which the reaper finalizes a call as
    ``gateway_lost``, at least 3 checkpoint intervals (``RYMI_REAPER_STALE_AFTER_S``)."""

    @property
    def base_url(self) -> str:
        """The public base URL, or ``http://host:port`` when none is configured."""
        if self.public_base_url is not None:
            return self.public_base_url
        host = "localhost" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read ``RYMI_*`` variables; unset or empty variables take the defaults.

        Raises:
            ConfigError: a variable is malformed or out of range; names the variable.
        """
        env = {k: v.strip() for k, v in environ.items() if k.startswith("RYMI_") and v.strip()}
        data_dir = Path(env.get("RYMI_DATA_DIR", _DEFAULT_DATA_DIR))
        default_db = f"sqlite+aiosqlite:///{data_dir.as_posix()}/rymi.db"
        checkpoint = _int(env, "RYMI_CHECKPOINT_INTERVAL_S", 5, 1, 60)
        settings = cls(
            data_dir=data_dir,
            database_url=normalize_database_url(env.get("RYMI_DATABASE_URL", default_db)),
            master_keys=parse_master_keys(env.get("RYMI_MASTER_KEYS", "")),
            redis_url=_redis_url(env.get("RYMI_REDIS_URL")),
            public_base_url=_public_base_url(env.get("RYMI_PUBLIC_BASE_URL")),
            host=_host(env.get("RYMI_HOST", "127.0.0.1")),
            port=_int(env, "RYMI_PORT", 8080, 1, 65535),
            checkpoint_interval_s=checkpoint,
            reaper_stale_after_s=_int(env, "RYMI_REAPER_STALE_AFTER_S", 60, 3 * checkpoint, 86400),
        )
        return settings


def normalize_database_url(url: str, variable: str = "RYMI_DATABASE_URL") -> str:
    """Map ``postgres://``/``postgresql://``/``sqlite://`` to their async drivers.

    Raises:
        ConfigError: the scheme is not SQLite or PostgreSQL.
    """
    scheme, sep, rest = url.partition("://")
    driver = _DATABASE_SCHEMES.get(scheme.lower())
    if not sep or driver is None or not rest:
        # The URL may hold a password: name the scheme only.
        raise ConfigError(
            variable,
            "expected sqlite+aiosqlite:///path/to/file.db or "
            f"postgresql+asyncpg://user@host/db, got scheme {scheme[:30]!r}",
        )
    return f"{driver}://{rest}"


def parse_master_keys(value: str) -> tuple[bytes, ...]:
    """Parse comma-separated url-safe base64 keys of 32 bytes each, newest first.

    Raises:
        ConfigError: an entry is not base64 of exactly 32 bytes (the value is not echoed).
    """
    keys: list[bytes] = []
    for position, entry in enumerate(part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            key = base64.urlsafe_b64decode(entry.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            key = b""
        if len(key) != MASTER_KEY_BYTES:
            raise ConfigError(
                "RYMI_MASTER_KEYS",
                f"entry {position + 1} is not url-safe base64 of {MASTER_KEY_BYTES} bytes "
                "(make one with `rymi-gateway secrets generate-key`)",
            )
        if key in keys:
            raise ConfigError("RYMI_MASTER_KEYS", f"entry {position + 1} repeats an earlier key")
        keys.append(key)
    return tuple(keys)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ConfigError(name, f"expected an integer {low}-{high}, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"expected an integer {low}-{high}, got {value}")
    return value


def _redis_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    if urlsplit(raw).scheme not in _REDIS_SCHEMES:
        raise ConfigError("RYMI_REDIS_URL", "expected redis://, rediss:// or unix:// URL")
    return raw


def _public_base_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(
            "RYMI_PUBLIC_BASE_URL",
            f"expected http(s)://host[:port][/path] without a query, got {raw[:80]!r}",
        )
    return raw.rstrip("/")


def _host(raw: str) -> str:
    if not _HOST_RE.fullmatch(raw):
        raise ConfigError("RYMI_HOST", f"expected an IP address or host name, got {raw[:40]!r}")
    return raw
