"""Billing rules: billable units, cost by agent role, and a per-call audio meter. Pure.

The rules (ARCHITECTURE.md "Billing and limits", docs.rymi.live/api/billing.html):

* Billable audio runs from the first audio exchanged (either direction) to the end of
  the call. A call that exchanged no audio bills nothing.
* The span is read on two clocks and the shorter reading bills: the gateway's monotonic
  clock and, where the edge passes it, the caller's media clock (caller audio received,
  which the carrier streams continuously in real time: docs/architecture.md). A
  gateway that was not scheduled when the hang-up arrived (a VM's steal, a long pause)
  reads the hang-up late by its own clock; the media clock does not bill that time.
* It is billed in units of 30 s, rounded up (1 ms -> 1 unit, 30.000 s -> 1, 30.001 s -> 2),
  and never beyond the agent's max call duration.
* A unit costs half the role's per-minute rate.

Everything here works in integer milliseconds and integer micro-dollars (1 USD =
1 000 000 micros), so no float ever touches money: every rate is an even number of
micros per minute, so a unit's price is exact.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gateway.errors import ValidationError

__all__ = [
    "MICROS_PER_USD",
    "RATE_PER_MINUTE_MICROS",
    "UNIT_MS",
    "AudioMeter",
    "Charge",
    "Role",
    "billable_units",
    "charge",
    "cost_micros",
    "micros_to_usd",
    "usd_to_micros",
]

UNIT_MS = 30_000
"""Length of one billable unit, in milliseconds."""

MICROS_PER_USD = 1_000_000
"""Micro-dollars in one US dollar."""


class Role(enum.StrEnum):
    """Agent role; it decides the per-minute rate."""

    OPERATOR = "operator"
    SPECIALIST = "specialist"
    EXECUTIVE = "executive"
    CONCIERGE = "concierge"


RATE_PER_MINUTE_MICROS: dict[Role, int] = {
    # docs.rymi.live/api/billing.html (newer page, four roles), USD per minute.
    Role.OPERATOR: 50_000,
    Role.SPECIALIST: 100_000,
    Role.EXECUTIVE: 250_000,
    Role.CONCIERGE: 400_000,
}
"""Per-minute rate of each role, in micro-dollars."""


def billable_units(audio_ms: int, max_duration_ms: int) -> int:
    """Units of 30 s for ``audio_ms`` of audio, rounded up, capped at the max duration.

    Args:
        audio_ms: billable audio (first audio to end of call), in milliseconds, >= 0.
        max_duration_ms: the agent's max call duration in milliseconds, > 0.

    Raises:
        ValidationError: either argument is negative, zero (max) or not an int.
    """
    _require_int("audio_ms", audio_ms, 0)
    _require_int("max_duration_ms", max_duration_ms, 1)
    capped = min(audio_ms, max_duration_ms)
    return -(-capped // UNIT_MS)  # ceiling division in integers


def cost_micros(units: int, role: Role) -> int:
    """Cost of ``units`` 30 s units at ``role``'s rate, in micro-dollars (exact).

    Raises:
        ValidationError: ``units`` is negative or not an int.
    """
    _require_int("units", units, 0)
    return units * RATE_PER_MINUTE_MICROS[Role(role)] // 2


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call costs."""

    audio_ms: int
    """Billable audio as measured (before the cap), in milliseconds."""
    units: int
    """Billable 30 s units (after the cap)."""
    cost_micros: int
    """Cost in micro-dollars."""
    role: Role
    """The role whose rate was applied."""


def charge(audio_ms: int, max_duration_ms: int, role: Role) -> Charge:
    """Units and cost of a call; see :func:`billable_units` and :func:`cost_micros`."""
    units = billable_units(audio_ms, max_duration_ms)
    return Charge(audio_ms, units, cost_micros(units, role), Role(role))


def micros_to_usd(micros: int) -> Decimal:
    """Micro-dollars as an exact :class:`~decimal.Decimal` amount of dollars."""
    return Decimal(micros).scaleb(-6)


def usd_to_micros(amount: str, field: str = "amount") -> int:
    """Parse a dollar amount such as ``"12.50"`` into micro-dollars.

    Raises:
        ValidationError: not a finite decimal number or finer than one micro-dollar.
    """
    try:
        value = Decimal(amount.strip())
    except (InvalidOperation, AttributeError):
        raise ValidationError(
            field, f"expected a dollar amount like 12.50, got {amount!r}"
        ) from None
    if not value.is_finite():
        raise ValidationError(field, f"expected a finite dollar amount, got {amount!r}")
    micros = value.scaleb(6)
    if micros != micros.to_integral_value():
        raise ValidationError(field, f"expected at most 6 decimal places, got {amount!r}")
    return int(micros)


@dataclass(slots=True)
class AudioMeter:
    """Measures a live call's billable audio. Time comes in as monotonic ``now_ms``.

    Call :meth:`audio` whenever a media frame carrying audio passes, in either direction;
    the first one starts the billable span, which then runs until the call ends.

    ``media_ms``, where given, is the caller's media clock: milliseconds of caller audio
    received so far. The span is then the shorter of the two clocks' readings (module
    docstring): the bill never exceeds the caller audio the carrier streamed meanwhile.
    """

    first_audio_ms: int | None = None
    """Monotonic time of the first audio frame, in milliseconds; None before any audio."""
    first_media_ms: int | None = None
    """The caller's media clock at the first audio frame; None when not given."""
    last_checkpoint_ms: int | None = None
    """Monotonic time of the last checkpoint taken, in milliseconds."""

    def audio(self, now_ms: int, media_ms: int | None = None) -> None:
        """Record that audio was exchanged at ``now_ms`` (media clock ``media_ms``)."""
        if self.first_audio_ms is None:
            self.first_audio_ms = now_ms
            self.first_media_ms = media_ms

    def audio_ms(self, now_ms: int, media_ms: int | None = None) -> int:
        """Billable audio so far, in milliseconds (0 before any audio)."""
        if self.first_audio_ms is None:
            return 0
        span = max(0, now_ms - self.first_audio_ms)
        if media_ms is not None and self.first_media_ms is not None:
            span = min(span, max(0, media_ms - self.first_media_ms))
        return span

    def checkpoint_due(self, now_ms: int, interval_ms: int) -> bool:
        """Whether a usage checkpoint is due (none taken yet, or ``interval_ms`` passed)."""
        if self.first_audio_ms is None:
            return False
        last = self.last_checkpoint_ms
        return last is None or now_ms - last >= interval_ms

    def checkpoint(self, now_ms: int, media_ms: int | None = None) -> int:
        """Take a checkpoint: remember ``now_ms`` and return the audio so far in ms."""
        self.last_checkpoint_ms = now_ms
        return self.audio_ms(now_ms, media_ms)


def _require_int(name: str, value: object, low: int) -> None:
    # bool is an int subclass; True is not a duration.
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValidationError(name, f"expected an integer >= {low}, got {value!r}")
