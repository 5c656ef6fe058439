"""What the API is configured with, apart from the state it is handed.

:class:`ApiSettings` is built by whoever mounts the API (the server's app factory) from
:class:`gateway.config.Settings`; see docs/api.md "Wiring" for the ``RYMI_*`` variables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ApiSettings"]


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """Limits and the operator's admin token."""

    admin_token: str | None = field(default=None, repr=False)
    """Bearer token of the operator's admin endpoints (top-up); None disables them
    (``RYMI_ADMIN_TOKEN``, at least 32 characters)."""

    requests_per_minute_per_key: int = 300
    """Requests one API key may make per minute (``RYMI_API_RATE_PER_KEY``)."""

    requests_per_minute_per_tenant: int = 600
    """Requests all of a tenant's keys together may make per minute
    (``RYMI_API_RATE_PER_TENANT``)."""

    credential_attempts: int = 3
    """Carrier credential checks (validate, and separately connect) per tenant and window;
    docs.rymi.live/api/telephony.html: 3 per 5 minutes."""

    credential_window_s: float = 300.0
    """The window of :attr:`credential_attempts`, in seconds."""

    webhook_dev_mode: bool = False
    """Allow ``http://`` loopback and private webhook targets (``RYMI_WEBHOOK_DEV_MODE``)."""

    webhook_rotation_window_s: int = 86_400
    """Seconds a rotated-out webhook secret keeps signing (``RYMI_WEBHOOK_ROTATION_WINDOW_S``)."""

    public_base_url: str | None = None
    """The gateway's public base URL (``RYMI_PUBLIC_BASE_URL``): outbound calls give the
    carrier ``<base>/inbound/<provider>`` as their answer URL. None: no outbound calls."""

    outbound_ring_timeout_s: int = 60
    """Seconds the carrier lets an outbound call ring before giving up."""

    reservation_ttl_s: float = 30.0
    """Seconds a reserved slot waits for its media stream (``RYMI_RESERVATION_TTL_S``). An
    outbound call's slot is reserved for ring timeout + this, so it covers the ringing."""

    last_used_resolution_s: float = 60.0
    """How often (at most) a key's ``last_used_at`` is written, in seconds: one write per
    key per minute instead of one per request."""
