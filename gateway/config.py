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
from typing import Any
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

    reaper_interval_s: int = 10
    """Seconds between reaper passes on each instance, 1-3600 (``RYMI_REAPER_INTERVAL_S``)."""

    # -- call engine (docs/call-engine.md) --------------------------------------------

    media_start_timeout_s: int = 5
    """Seconds the carrier has to send ``start`` after the media socket opens, 1-60;
    then the socket is closed with 4000 (``RYMI_MEDIA_START_TIMEOUT_S``)."""

    agent_grace_s: int = 2
    """Seconds of silence the caller hears after the agent failed, before the hang-up,
    0-60 (``RYMI_AGENT_GRACE_S``)."""

    duration_warning_s: int = 30
    """Seconds before maxCallDuration that the agent gets ``duration_warning``, 0-600;
    0 sends none (``RYMI_DURATION_WARNING_S``)."""

    max_call_duration_cap_s: int | None = None
    """Gateway-wide cap on any call's duration in seconds, 1-7200, applied as
    min(agent's maxCallDuration, cap); None = no cap (``RYMI_MAX_CALL_DURATION_CAP_S``).
    For trial deployments, and for tests that need a short limit."""

    reservation_ttl_s: int = 30
    """Seconds an answered call's slot is held waiting for its media stream, 5-600
    (``RYMI_RESERVATION_TTL_S``)."""

    lease_ttl_s: int = 15
    """Seconds a live call's slot survives without a renew, 2-300 (``RYMI_LEASE_TTL_S``);
    a killed gateway's slots come back within this."""

    lease_renew_interval_s: int = 5
    """Seconds between lease renewals, 1-60 and below the lease TTL
    (``RYMI_LEASE_RENEW_INTERVAL_S``)."""

    media_max_message_bytes: int = 65_536
    """Largest carrier media message, bytes, 1024-1048576 (``RYMI_MEDIA_MAX_MESSAGE_BYTES``)."""

    media_max_messages_per_s: int = 250
    """Carrier media messages per second a socket may sustain (2 s window) before it is
    closed with 1008, 10-10000 (``RYMI_MEDIA_MAX_MESSAGES_PER_S``)."""

    media_ping_interval_s: float = 20.0
    """Seconds between pings on a live carrier media socket, 1-300; a socket that sent
    no caller audio for a whole interval is closed with 1011 as a dead connection
    (reliability.md 5.3; ``RYMI_MEDIA_PING_INTERVAL_S``)."""

    pacer_lead_frames: int = 3
    """20 ms frames sent to the carrier ahead of the caller's ear, 1-50
    (``RYMI_PACER_LEAD_FRAMES``)."""

    agent_transport: str = "picows"
    """WebSocket client for agents at ``ws(s)://`` URLs: ``picows`` (callbacks, C framing and
    masking; the default) or ``aiohttp`` (the earlier client, kept as a fallback and for
    side-by-side measurement) (``RYMI_AGENT_TRANSPORT``)."""

    event_loop: str = "uvloop"
    """``uvloop`` (the default where it is installed: Linux and macOS) or ``asyncio`` (the
    standard library's loop) (``RYMI_EVENT_LOOP``)."""

    redis_namespace: str = "rymi"
    """Prefix and hash tag of the coordination keys in Redis, 1-32 of ``A-Z a-z 0-9 _ -``;
    deployments sharing one Redis use different ones (``RYMI_REDIS_NAMESPACE``)."""

    twilio_api_base_url: str | None = None
    """Twilio REST base for hang-ups (``RYMI_TWILIO_API_BASE_URL``); None = api.twilio.com."""

    plivo_api_base_url: str | None = None
    """Plivo REST base for hang-ups (``RYMI_PLIVO_API_BASE_URL``); None = api.plivo.com."""

    vonage_api_base_url: str | None = None
    """Vonage REST base for hang-ups (``RYMI_VONAGE_API_BASE_URL``); None = api.nexmo.com."""

    vonage_rest_base_url: str | None = None
    """Vonage account REST base (credential checks, number sync) — a different host from
    the voice API (``RYMI_VONAGE_REST_BASE_URL``); None = rest.nexmo.com."""

    admin_token: str | None = field(default=None, repr=False)
    """Bearer token of the operator's /v1/admin endpoints (top-up), at least 32 characters
    (``RYMI_ADMIN_TOKEN``); None disables them."""

    api_rate_per_key: int = 300
    """/v1 requests one API key may make per minute, 1-100000 (``RYMI_API_RATE_PER_KEY``)."""

    api_rate_per_tenant: int = 600
    """/v1 requests all of a tenant's keys may make per minute, 1-100000
    (``RYMI_API_RATE_PER_TENANT``)."""

    # -- webhooks (docs/webhooks.md) ---------------------------------------------------

    webhook_dev_mode: bool = False
    """Development mode for webhook targets (``RYMI_WEBHOOK_DEV_MODE``, true/false):
    ``http://`` to loopback hosts and private/loopback addresses are allowed. Never in
    production: it lets tenants make the gateway POST into the operator's network."""

    webhook_attempt_timeout_s: float = 3.0
    """Seconds each delivery attempt may take, connect to response, 0.1-30
    (``RYMI_WEBHOOK_ATTEMPT_TIMEOUT_S``)."""

    webhook_max_attempts: int = 5
    """Attempts per delivery before it is dead-lettered, 1-20 (``RYMI_WEBHOOK_MAX_ATTEMPTS``)."""

    webhook_retry_base_s: float = 1.0
    """Seconds between the first and second attempt; each later gap doubles (1, 2, 4, 8 s),
    0.01-600 (``RYMI_WEBHOOK_RETRY_BASE_S``)."""

    webhook_retry_jitter: float = 0.2
    """Relative jitter of each gap (0.2 = ±20 %), 0-0.5 (``RYMI_WEBHOOK_RETRY_JITTER``)."""

    webhook_lease_s: float = 30.0
    """Seconds a dispatcher holds a claimed delivery; a delivery whose dispatcher died is
    retried after this. At least the attempt timeout + 1, at most 3600
    (``RYMI_WEBHOOK_LEASE_S``)."""

    webhook_poll_interval_s: float = 1.0
    """Longest pause between looks at the outbox, seconds, 0.01-60
    (``RYMI_WEBHOOK_POLL_INTERVAL_S``)."""

    webhook_rotation_window_s: int = 86_400
    """Seconds a rotated-out webhook secret keeps signing deliveries (beside the new one),
    0-2592000 (``RYMI_WEBHOOK_ROTATION_WINDOW_S``; default 24 h)."""

    webhook_alert_interval_s: int = 3600
    """At most one dead-letter alert per endpoint per this many seconds, 1-86400
    (``RYMI_WEBHOOK_ALERT_INTERVAL_S``)."""

    smtp_url: str | None = field(default=None, repr=False)
    """Mail server for dead-letter alerts (``RYMI_SMTP_URL``):
    ``smtp://[user:pass@]host[:port][?starttls=true&from=addr]`` or ``smtps://...``;
    None = alerts are a log line and a metric only."""

    def carrier_api_base_url(self, carrier: str) -> str | None:
        """The configured REST base URL for ``carrier``'s hang-up, or None (its default)."""
        return {
            "twilio": self.twilio_api_base_url,
            "plivo": self.plivo_api_base_url,
            "vonage": self.vonage_api_base_url,
        }.get(carrier)

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
            reaper_interval_s=_int(env, "RYMI_REAPER_INTERVAL_S", 10, 1, 3600),
            **_engine_settings(env),
            **_api_settings(env),
            **_webhook_settings(env),
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


def _engine_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The call engine's settings (see the fields' docstrings for units and ranges)."""
    lease_ttl = _int(env, "RYMI_LEASE_TTL_S", 15, 2, 300)
    cap = (
        _int(env, "RYMI_MAX_CALL_DURATION_CAP_S", 0, 1, 7200)
        if ("RYMI_MAX_CALL_DURATION_CAP_S" in env)
        else None
    )
    return {
        "media_start_timeout_s": _int(env, "RYMI_MEDIA_START_TIMEOUT_S", 5, 1, 60),
        "agent_grace_s": _int(env, "RYMI_AGENT_GRACE_S", 2, 0, 60),
        "duration_warning_s": _int(env, "RYMI_DURATION_WARNING_S", 30, 0, 600),
        "max_call_duration_cap_s": cap,
        "reservation_ttl_s": _int(env, "RYMI_RESERVATION_TTL_S", 30, 5, 600),
        "lease_ttl_s": lease_ttl,
        "lease_renew_interval_s": _int(env, "RYMI_LEASE_RENEW_INTERVAL_S", 5, 1, lease_ttl - 1),
        "media_max_message_bytes": _int(env, "RYMI_MEDIA_MAX_MESSAGE_BYTES", 65_536, 1024, 1 << 20),
        "media_max_messages_per_s": _int(env, "RYMI_MEDIA_MAX_MESSAGES_PER_S", 250, 10, 10_000),
        "media_ping_interval_s": _float(env, "RYMI_MEDIA_PING_INTERVAL_S", 20.0, 1.0, 300.0),
        "pacer_lead_frames": _int(env, "RYMI_PACER_LEAD_FRAMES", 3, 1, 50),
        "agent_transport": _choice(env, "RYMI_AGENT_TRANSPORT", ("picows", "aiohttp")),
        "event_loop": _choice(env, "RYMI_EVENT_LOOP", ("uvloop", "asyncio")),
        "redis_namespace": _namespace(env.get("RYMI_REDIS_NAMESPACE", "rymi")),
        **{
            f"{carrier}_api_base_url": _api_base_url(env, f"RYMI_{carrier.upper()}_API_BASE_URL")
            for carrier in ("twilio", "plivo", "vonage")
        },
    }


def _api_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The public API's settings (see the fields' docstrings)."""
    admin_token = env.get("RYMI_ADMIN_TOKEN")
    if admin_token is not None and len(admin_token) < 32:
        # The value is a secret: say what is wrong, never echo it.
        raise ConfigError("RYMI_ADMIN_TOKEN", "expected at least 32 characters")
    return {
        "vonage_rest_base_url": _api_base_url(env, "RYMI_VONAGE_REST_BASE_URL"),
        "admin_token": admin_token,
        "api_rate_per_key": _int(env, "RYMI_API_RATE_PER_KEY", 300, 1, 100_000),
        "api_rate_per_tenant": _int(env, "RYMI_API_RATE_PER_TENANT", 600, 1, 100_000),
    }


def _webhook_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The webhook dispatcher's settings (see the fields' docstrings)."""
    timeout = _float(env, "RYMI_WEBHOOK_ATTEMPT_TIMEOUT_S", 3.0, 0.1, 30.0)
    smtp_url = env.get("RYMI_SMTP_URL")
    if smtp_url is not None:
        parts = urlsplit(smtp_url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            # May hold a password: never echo it.
            raise ConfigError(
                "RYMI_SMTP_URL", "expected smtp://[user:pass@]host[:port] or smtps://"
            )
    return {
        "webhook_dev_mode": _bool(env, "RYMI_WEBHOOK_DEV_MODE", default=False),
        "webhook_attempt_timeout_s": timeout,
        "webhook_max_attempts": _int(env, "RYMI_WEBHOOK_MAX_ATTEMPTS", 5, 1, 20),
        "webhook_retry_base_s": _float(env, "RYMI_WEBHOOK_RETRY_BASE_S", 1.0, 0.01, 600.0),
        "webhook_retry_jitter": _float(env, "RYMI_WEBHOOK_RETRY_JITTER", 0.2, 0.0, 0.5),
        "webhook_lease_s": _float(env, "RYMI_WEBHOOK_LEASE_S", 30.0, timeout + 1, 3600.0),
        "webhook_poll_interval_s": _float(env, "RYMI_WEBHOOK_POLL_INTERVAL_S", 1.0, 0.01, 60.0),
        "webhook_rotation_window_s": _int(
            env, "RYMI_WEBHOOK_ROTATION_WINDOW_S", 86_400, 0, 2_592_000
        ),
        "webhook_alert_interval_s": _int(env, "RYMI_WEBHOOK_ALERT_INTERVAL_S", 3600, 1, 86_400),
        "smtp_url": smtp_url,
    }


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number {low:g}-{high:g}, got {raw[:40]!r}") from None
    if not low <= value <= high:  # also refuses nan
        raise ConfigError(name, f"expected a number {low:g}-{high:g}, got {value:g}")
    return value


def _bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"expected true or false, got {raw[:20]!r}")


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed`` (the first is the default)."""
    raw = env.get(name)
    if raw is None:
        return allowed[0]
    if raw.lower() not in allowed:
        raise ConfigError(name, f"expected one of {', '.join(allowed)}, got {raw[:40]!r}")
    return raw.lower()


def _namespace(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", raw):
        raise ConfigError(
            "RYMI_REDIS_NAMESPACE", f"expected 1-32 of A-Z a-z 0-9 _ -, got {raw[:40]!r}"
        )
    return raw


def _api_base_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(name, f"expected http(s)://host[:port] without a query, got {raw[:80]!r}")
    return raw.rstrip("/")


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
