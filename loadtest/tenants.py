"""The load tester's tenants: one per carrier, seeded into a gateway's database.

A tenant has one active carrier (docs/state.md), so a mixed run needs one tenant per
carrier, each with its own number, its credentials (which the load tester also uses to
sign as that carrier) and a published agent: the built-in ``echo`` or the URL of an
external agent server with its secret. Credit is topped up generously and the tenant
has no concurrency limit, so admission refuses nothing the run did not ask for.

The result is a :class:`Setup`, saved as JSON so a run against an already running
gateway (``--target``) can use tenants seeded earlier (``rymi-loadtest seed``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.config import Settings

__all__ = ["CARRIERS", "CarrierSetup", "Setup", "seed"]

CARRIERS = ("twilio", "plivo", "vonage")
_NUMBERS = {"twilio": "+15550100001", "plivo": "+15550100002", "vonage": "+15550100003"}
_CREDIT_MICROS = 10**11  # 100,000 USD: no run can spend it
_MAX_DURATION_S = 7200  # the longest an agent may allow (docs/state.md)


@dataclass(frozen=True, slots=True)
class CarrierSetup:
    """One carrier's tenant, as the load tester needs it to play that carrier."""

    carrier: str
    tenant_id: str
    agent_id: str
    number: str
    account_id: str
    credential: str
    """What the carrier signs with: Twilio/Plivo auth token, Vonage signature secret."""

    def __repr__(self) -> str:  # the credential never reaches a log
        return f"CarrierSetup({self.carrier}, tenant={self.tenant_id}, number={self.number})"


@dataclass(frozen=True, slots=True)
class Setup:
    """The tenants of a run, by carrier."""

    carriers: dict[str, CarrierSetup]

    def to_json(self) -> str:
        """JSON (holds credentials: write it with mode 0600)."""
        return json.dumps({"carriers": {k: asdict(v) for k, v in self.carriers.items()}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Setup:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: not a setup document.
        """
        try:
            raw: dict[str, Any] = json.loads(text)["carriers"]
            return cls({k: CarrierSetup(**v) for k, v in raw.items()})
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"expected a rymi-loadtest setup JSON document: {exc}") from None

    def save(self, path: Path) -> None:
        """Write to ``path`` readable by the owner only (it holds credentials)."""
        path.touch(mode=0o600)
        path.write_text(self.to_json(), encoding="utf-8")


async def seed(
    settings: Settings,
    carriers: list[str],
    *,
    pipeline: str = "echo",
    pipeline_secret: str | None = None,
) -> Setup:
    """Create one tenant per carrier in ``settings``' database (migrated), each with an agent.

    Args:
        settings: the gateway's settings (database URL, master keys).
        carriers: which carriers.
        pipeline: ``echo`` or an agent server's base URL ``ws://HOST:PORT/agents``
            (the agent id is appended, as the agent server routes by it).
        pipeline_secret: the agent server's secret (needed with a URL).
    """
    from gateway.store.directory import Directory
    from gateway.store.ledger import Ledger
    from gateway.store.models import (
        CarrierCredentials,
        PlivoCredentials,
        TwilioCredentials,
        VonageCredentials,
    )
    from gateway.store.secrets import Secret, load_keyring
    from gateway.store.sql.engine import create_engine

    engine = create_engine(settings.database_url)
    try:
        directory, ledger = Directory(engine, load_keyring(settings)), Ledger(engine)
        made: dict[str, CarrierSetup] = {}
        for carrier in carriers:
            credential = secrets.token_urlsafe(24)
            account: str
            creds: CarrierCredentials
            if carrier == "twilio":
                account = "AC" + secrets.token_hex(16)
                creds = TwilioCredentials(account, Secret(credential))
            elif carrier == "plivo":
                account = "MA" + secrets.token_hex(9).upper()
                creds = PlivoCredentials(account, Secret(credential))
            else:
                account = secrets.token_hex(4)
                creds = VonageCredentials(
                    account, Secret(secrets.token_urlsafe(12)), Secret(credential)
                )
            tenant = await directory.create_tenant(f"loadtest-{carrier}-{secrets.token_hex(3)}")
            await directory.connect_carrier(tenant.id, creds)
            agent = await directory.create_agent(
                tenant.id,
                name=f"loadtest-{carrier}",
                max_call_duration_s=_MAX_DURATION_S,
                barge_in="off",  # the probe agent talks over the caller on purpose
                published=True,
            )
            if pipeline != "echo":
                if pipeline_secret is None:
                    raise ValueError("an agent URL needs its secret")
                await directory.update_agent(
                    tenant.id,
                    agent.id,
                    pipeline=f"{pipeline.rstrip('/')}/{agent.id}",
                    pipeline_secret=Secret(pipeline_secret),
                )
            await directory.add_number(tenant.id, _NUMBERS[carrier], agent.id)
            await ledger.top_up(tenant.id, _CREDIT_MICROS, memo="rymi-loadtest")
            made[carrier] = CarrierSetup(
                carrier, tenant.id, agent.id, _NUMBERS[carrier], account, credential
            )
        return Setup(made)
    finally:
        await engine.dispose()
