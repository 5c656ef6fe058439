"""Dead-letter alerts (throttled per endpoint) and the dispatcher's metric hooks.

When a delivery is dead-lettered the tenant is told, at most once per window
(default one hour) per endpoint, whichever instance dead-letters it: the throttle is a
conditional ``UPDATE webhook_endpoints SET last_alert_at_ms = now WHERE id = ? AND
(last_alert_at_ms IS NULL OR last_alert_at_ms <= now - window)``, so of any number of
dispatchers exactly one wins each window. The winner writes a WARNING log line, calls
the metric hook, and e-mails the endpoint's ``alert_email`` when ``RYMI_SMTP_URL`` is
set (``smtplib`` in a worker thread, so the event loop never blocks on a mail server).

Metrics are reported through :class:`WebhookMetrics`, a small interface the gateway's
metrics module implements (Prometheus counters and histograms); :class:`NullMetrics` is
the default and :class:`CountingMetrics` keeps plain numbers (tests, debugging).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConfigError
from gateway.store.sql import schema
from gateway.store.sql.engine import db_errors, write_tx

__all__ = [
    "AlertSender",
    "CountingMetrics",
    "NullMetrics",
    "SmtpTarget",
    "WebhookMetrics",
    "parse_smtp_url",
]

log = logging.getLogger("gateway.webhooks")

_SMTP_TIMEOUT_S = 10.0


class WebhookMetrics(Protocol):
    """What the dispatcher reports. Implementations must not block or raise."""

    def attempt(self, outcome: str) -> None:
        """One attempt ended: ``success``, ``http_error``, ``timeout``, ``network_error``."""

    def delivery(self, outcome: str, latency_s: float) -> None:
        """A delivery finished: ``delivered`` or ``dead``; latency from the event's creation."""

    def outbox_depth(self, pending: int) -> None:
        """Deliveries pending in the outbox now (all tenants)."""

    def alert(self) -> None:
        """A dead-letter alert went out (after throttling)."""


class NullMetrics:
    """Reports nothing."""

    def attempt(self, outcome: str) -> None:
        """Ignored."""

    def delivery(self, outcome: str, latency_s: float) -> None:
        """Ignored."""

    def outbox_depth(self, pending: int) -> None:
        """Ignored."""

    def alert(self) -> None:
        """Ignored."""


@dataclass
class CountingMetrics:
    """Keeps counts in memory."""

    attempts: Counter[str] = field(default_factory=Counter)
    deliveries: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    depth: int | None = None
    alerts: int = 0

    def attempt(self, outcome: str) -> None:
        """Count an attempt."""
        self.attempts[outcome] += 1

    def delivery(self, outcome: str, latency_s: float) -> None:
        """Count a finished delivery and keep its latency."""
        self.deliveries[outcome] += 1
        self.latencies_s.append(latency_s)

    def outbox_depth(self, pending: int) -> None:
        """Keep the last depth."""
        self.depth = pending

    def alert(self) -> None:
        """Count an alert."""
        self.alerts += 1


@dataclass(frozen=True)
class SmtpTarget:
    """Where alert mail goes out (parsed from ``RYMI_SMTP_URL``)."""

    host: str
    port: int
    tls: str
    """``ssl`` (smtps://), ``starttls`` (``?starttls=true``) or ``none``."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "rymi-gateway@localhost"


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://[user:pass@]host[:port][?starttls=true&from=addr]`` or ``smtps://...``.

    Raises:
        ConfigError: not an smtp(s) URL with a host (the value is not echoed: it may
            hold a password).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError("RYMI_SMTP_URL", "expected smtp://[user:pass@]host[:port] or smtps://")
    query = parse_qs(parts.query)
    starttls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
    tls = "ssl" if parts.scheme == "smtps" else ("starttls" if starttls else "none")
    try:
        port = parts.port or (465 if tls == "ssl" else 25)
    except ValueError:
        raise ConfigError("RYMI_SMTP_URL", "expected a port 1-65535") from None
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        sender=query.get("from", ["rymi-gateway@localhost"])[0],
    )


def send_mail(target: SmtpTarget, to: str, subject: str, text: str) -> None:
    """Send one plain-text message (blocking: run it in a thread)."""
    message = EmailMessage()
    message["From"] = target.sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    smtp: smtplib.SMTP
    if target.tls == "ssl":
        context = ssl.create_default_context()
        smtp = smtplib.SMTP_SSL(target.host, target.port, timeout=_SMTP_TIMEOUT_S, context=context)
    else:
        smtp = smtplib.SMTP(target.host, target.port, timeout=_SMTP_TIMEOUT_S)
    with smtp:
        if target.tls == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if target.username is not None:
            smtp.login(target.username, target.password or "")
        smtp.send_message(message)


class AlertSender:
    """Raises the (throttled) dead-letter alert of an endpoint.

    Args:
        engine: the outbox's database (holds the throttle).
        interval_ms: at most one alert per endpoint per this many milliseconds.
        metrics: the metric hook.
        smtp: where mail goes; None = log and metric only.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        interval_ms: int,
        metrics: WebhookMetrics,
        smtp: SmtpTarget | None = None,
    ) -> None:
        self.engine = engine
        self.interval_ms = interval_ms
        self.metrics = metrics
        self.smtp = smtp

    async def dead_lettered(
        self,
        *,
        endpoint_id: str,
        url: str,
        alert_email: str | None,
        delivery_id: str,
        event_type: str,
        now_ms: int,
    ) -> bool:
        """Alert for a dead-lettered delivery unless the endpoint was alerted recently.

        Returns whether an alert went out.
        """
        e = schema.webhook_endpoints.c
        stmt = (
            sa.update(schema.webhook_endpoints)
            .where(e.id == endpoint_id)
            .where(
                sa.or_(
                    e.last_alert_at_ms.is_(None), e.last_alert_at_ms <= now_ms - self.interval_ms
                )
            )
            .values(last_alert_at_ms=now_ms)
        )
        with db_errors("throttle webhook alert"):
            async with write_tx(self.engine) as conn:
                if (await conn.execute(stmt)).rowcount != 1:
                    return False
        host = urlsplit(url).hostname or "?"
        # The host only: a URL's path or query can carry the receiver's own token.
        log.warning(
            "webhook %s (host %s): delivery %s of %s dead-lettered after its last attempt",
            endpoint_id,
            host,
            delivery_id,
            event_type,
        )
        self.metrics.alert()
        if self.smtp is not None and alert_email is not None:
            subject = f"[rymi] webhook deliveries to {host} are failing"
            text = (
                f"Delivery {delivery_id} ({event_type}) to webhook {endpoint_id} at {host} "
                "failed on every attempt and was dead-lettered.\n"
                f"List: GET /v1/webhooks/{endpoint_id}/deliveries\n"
                f"Replay: POST /v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay\n"
                "You get at most one of these messages per hour per webhook.\n"
            )
            try:
                await asyncio.to_thread(send_mail, self.smtp, alert_email, subject, text)
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("webhook %s: alert mail failed (%s)", endpoint_id, type(exc).__name__)
        return True
