"""Stable reason codes for calls the gateway refuses.

These strings are part of the public contract: they appear in call records, webhooks,
metrics labels and the API, so tenants and dashboards can rely on them. Add codes; never
rename or reuse one.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RefusalReason"]


class RefusalReason(StrEnum):
    """Why a call was refused at answer (or at media start).

    The value is the stable code; the member name is for code only.
    """

    QUOTA_CONCURRENT_CALLS = "quota_exceeded.concurrent_calls"
    """The tenant already has ``max_concurrent_calls`` calls reserved or live."""

    BALANCE_DEPLETED = "balance_depleted"
    """The tenant's prepaid balance is zero or below."""

    AGENT_NOT_PUBLISHED = "agent_not_published"
    """The number's agent is a draft (or the number has no agent)."""

    NUMBER_NOT_FOUND = "number_not_found"
    """The called number is not attached to any tenant."""

    CARRIER_NOT_CONNECTED = "carrier_not_connected"
    """The tenant has no credentials for the carrier the call came from."""

    COORDINATION_UNAVAILABLE = "coordination_unavailable"
    """The coordination backend (Redis) is unreachable or still re-asserting leases
    after losing its data: new calls are refused rather than admitted unchecked."""
