"""Label values of the gateway's metrics: closed sets, and the tenants listed for a series.

Split from :mod:`gateway.metrics`, which re-exports :data:`OTHER` and
:class:`TenantLabels`: every label has a small closed set of values, and a value outside
it is recorded as ``other`` and logged once, so a bug cannot grow the series count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["OTHER", "ClosedLabel", "TenantLabels"]

log = logging.getLogger("gateway.metrics")

OTHER = "other"
"""The label value recorded instead of a value outside the label's closed set."""


@dataclass(slots=True)
class ClosedLabel:
    """A label's allowed values; anything else becomes :data:`OTHER` (logged once)."""

    label: str
    values: frozenset[str]
    _warned: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, label: str, values: Iterable[str]) -> ClosedLabel:
        return cls(label, frozenset(str(v) for v in values) | {OTHER})

    def __call__(self, value: object) -> str:
        text = str(value)
        if text in self.values:
            return text
        if self.label not in self._warned:
            # Once per label: the value may be anything a bug passed; show its shape only.
            self._warned.add(self.label)
            log.warning(
                "metrics: label %s got a value outside its closed set (%s, %d chars); "
                "recorded as %r",
                self.label,
                type(value).__name__,
                len(text),
                OTHER,
            )
        return OTHER


@dataclass(frozen=True, slots=True)
class TenantLabels:
    """The tenants that get their own series in the per-tenant families.

    Operators list the tenants worth a series (``RYMI_METRICS_TENANTS``, at most
    :attr:`MAX`); all others are summed under ``other``. An explicit list, rather than
    "the first N seen", gives every worker and every host the same series, and a tenant
    never changes label in the middle of a counter's life.
    """

    MAX = 100
    """Largest allowed list: 100 tenants x 2 families stays a small exporter."""

    tenants: frozenset[str] = frozenset()

    @property
    def enabled(self) -> bool:
        """True when at least one tenant is listed (otherwise nothing is recorded)."""
        return bool(self.tenants)

    def label(self, tenant_id: str) -> str:
        """The label value of ``tenant_id``: itself when listed, else ``other``."""
        return tenant_id if tenant_id in self.tenants else OTHER
