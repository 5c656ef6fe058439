"""Operations settings: logging, per-tenant metrics and the drain deadline.

``RYMI_LOG_FORMAT``, ``RYMI_LOG_LEVEL``, ``RYMI_METRICS_TENANTS``, ``RYMI_DRAIN_DEADLINE_S``.

Read apart from :class:`gateway.config.Settings` because logging is configured first, so
that an error in the other settings is already logged in the chosen format. Same rules
as the main settings: unset or empty takes the default, a bad value raises
:class:`~gateway.errors.ConfigError` naming the variable and what is allowed, nothing is
clamped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.errors import ConfigError
from gateway.metrics import TenantLabels

__all__ = ["ENV_NAMES", "LogFormat", "OpsSettings"]

LogFormat = Literal["text", "json"]

ENV_NAMES = ("RYMI_LOG_FORMAT", "RYMI_LOG_LEVEL", "RYMI_METRICS_TENANTS", "RYMI_DRAIN_DEADLINE_S")
"""The variables :meth:`OpsSettings.from_env` reads."""

_LEVELS = ("debug", "info", "warning", "error")
_TENANT_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True, slots=True)
class OpsSettings:
    """How the process logs and which tenants get their own metric series."""

    log_format: LogFormat = "text"
    """``text`` for a terminal, ``json`` for one JSON object per line (``RYMI_LOG_FORMAT``)."""

    log_level: str = "info"
    """Lowest level logged by the gateway's loggers: debug, info, warning or error
    (``RYMI_LOG_LEVEL``). Per-frame lines exist only at debug, rate-limited."""

    metrics_tenants: TenantLabels = field(default_factory=TenantLabels)
    """Tenants with their own series in ``gateway_tenant_*`` (``RYMI_METRICS_TENANTS``,
    comma-separated tenant ids, at most 100); empty = the per-tenant families stay empty."""

    drain_deadline_s: int | None = None
    """Seconds after the first SIGTERM at which the calls still live are hung up (and
    billed), 1-86400; None = let them run to their end, each bounded by its
    maxCallDuration (``RYMI_DRAIN_DEADLINE_S``). Keep it below the orchestrator's grace
    period minus the preStop delay and ~30 s to finalize."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OpsSettings:
        """Read the ``RYMI_LOG_*`` and ``RYMI_METRICS_*`` variables.

        Raises:
            ConfigError: a value is not one of the allowed ones; names the variable.
        """
        fmt = environ.get("RYMI_LOG_FORMAT", "").strip().lower() or "text"
        if fmt not in ("text", "json"):
            raise ConfigError("RYMI_LOG_FORMAT", f"expected text or json, got {fmt[:40]!r}")
        level = environ.get("RYMI_LOG_LEVEL", "").strip().lower() or "info"
        if level not in _LEVELS:
            raise ConfigError(
                "RYMI_LOG_LEVEL", f"expected one of {', '.join(_LEVELS)}, got {level[:40]!r}"
            )
        return cls(
            log_format="json" if fmt == "json" else "text",
            log_level=level,
            metrics_tenants=_tenants(environ.get("RYMI_METRICS_TENANTS", "")),
            drain_deadline_s=_deadline(environ.get("RYMI_DRAIN_DEADLINE_S", "").strip()),
        )


def _deadline(raw: str) -> int | None:
    if not raw:
        return None
    try:
        value = int(raw, 10)
    except ValueError:
        value = 0
    if not 1 <= value <= 86_400:
        raise ConfigError(
            "RYMI_DRAIN_DEADLINE_S", f"expected an integer 1-86400 (seconds), got {raw[:40]!r}"
        )
    return value


def _tenants(raw: str) -> TenantLabels:
    names = [part.strip() for part in raw.split(",") if part.strip()]
    for position, name in enumerate(names, start=1):
        if not _TENANT_RE.fullmatch(name) or name == "other":
            raise ConfigError(
                "RYMI_METRICS_TENANTS",
                f"entry {position} is not a tenant id (1-64 of A-Z a-z 0-9 _ . : -, not 'other')",
            )
    if len(set(names)) > TenantLabels.MAX:
        raise ConfigError(
            "RYMI_METRICS_TENANTS",
            f"expected at most {TenantLabels.MAX} tenants, got {len(set(names))}",
        )
    return TenantLabels(frozenset(names))
