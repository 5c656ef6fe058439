"""``/v1/billing``: rates, balance, usage, alert settings, and the operator's top-up.

Money is exact inside (integer micro-dollars, :mod:`gateway.metering`); the API shows
dollars as JSON numbers as the docs do (``balance_usd: 15.0``). ``balance_seconds`` is
the time the balance buys at the operator rate, the cheapest (billing.html, newer):
$15.00 / $0.05 per minute = 18 000 s. ``is_active`` is balance > 0, the same rule the
call engine admits calls by.

Alerts: ``PUT /v1/billing/alerts`` stores the thresholds; emitting the
``billing.low_balance`` events when the balance crosses one is the webhooks' work and
is not done here.

Top-up is an operator action (customers top up through their billing provider, not
this API): ``POST /v1/admin/tenants/{tenant_id}/top-up`` with the operator's admin
token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from aiohttp import web

from gateway.api.auth import Auth
from gateway.api.call_schemas import (
    AgentRoles,
    AlertsIn,
    AlertsOut,
    Balance,
    Ok,
    RoleRate,
    TopUpIn,
    TopUpOut,
    UsagePeriod,
    UsageSummary,
    VoiceRuntime,
)
from gateway.api.http import DIRECTORY, LEDGER, TENANT, iso_ms, json_response, read_json
from gateway.api.routes import Route
from gateway.metering import MICROS_PER_USD, RATE_PER_MINUTE_MICROS, Role, micros_to_usd
from gateway.metering import usd_to_micros as parse_usd

__all__ = ["ROUTES", "seconds_at_operator_rate"]

_OPERATOR = RATE_PER_MINUTE_MICROS[Role.OPERATOR]


def usd(micros: int) -> float:
    """Micro-dollars as a float number of dollars, for JSON."""
    return float(micros_to_usd(micros))


def seconds_at_operator_rate(balance_micros: int) -> int:
    """Whole seconds the balance buys at the operator rate (0 when it is not positive)."""
    return max(0, balance_micros * 60 // _OPERATOR)


async def agent_roles(request: web.Request) -> web.Response:
    """Per-role rates (docs.rymi.live/api/billing.html, newer page)."""
    roles = {
        role.value: RoleRate(
            rate_per_minute=usd(rate),
            rate_per_second=round(rate / 60 / MICROS_PER_USD, 8),
            display_name=role.value.capitalize(),
        )
        for role, rate in RATE_PER_MINUTE_MICROS.items()
    }
    return json_response(AgentRoles(roles))


async def balance(request: web.Request) -> web.Response:
    """The prepaid balance, and the seconds it buys at the operator rate."""
    tenant = request[TENANT]
    micros = await request.app[LEDGER].balance_micros(tenant)
    seconds = seconds_at_operator_rate(micros)
    result = Balance(
        tenant_id=tenant,
        balance_usd=usd(micros),
        balance_seconds=seconds,
        estimated_minutes_remaining=round(seconds / 60, 2),
        roles={role.value: usd(rate) for role, rate in RATE_PER_MINUTE_MICROS.items()},
        is_active=micros > 0,
    )
    return json_response(result)


async def usage_summary(request: web.Request) -> web.Response:
    """Remaining voice minutes (operator rate) and this calendar month's usage (UTC)."""
    tenant, ledger = request[TENANT], request.app[LEDGER]
    micros = await ledger.balance_micros(tenant)
    now = datetime.now(tz=UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start_ms = int(month_start.timestamp() * 1000)
    used = await ledger.usage_since(tenant, start_ms)
    result = UsageSummary(
        voice_runtime=VoiceRuntime(
            remaining_minutes=round(seconds_at_operator_rate(micros) / 60, 2),
            status="active" if micros > 0 else "depleted",
        ),
        current_month=UsagePeriod(
            start=iso_ms(start_ms) or "",
            calls=used.calls,
            billable_minutes=used.billable_units / 2,
            spend_usd=usd(used.cost_micros),
        ),
    )
    return json_response(result)


async def set_alerts(request: web.Request) -> web.Response:
    """Store spend-alert settings; fields left out keep their value."""
    body = await read_json(request, AlertsIn)
    ledger, tenant = request.app[LEDGER], request[TENANT]
    current = await ledger.alerts(tenant)
    thresholds = (
        [parse_usd(str(t), "thresholds_usd") for t in body.thresholds_usd]
        if body.thresholds_usd is not None
        else list(current.thresholds_micros if current else ())
    )
    await ledger.set_alerts(
        tenant,
        thresholds_micros=thresholds,
        low_balance_pct=body.low_balance_pct
        if body.low_balance_pct is not None
        else (current.low_balance_pct if current else None),
        email_enabled=body.email_enabled
        if body.email_enabled is not None
        else (current.email_enabled if current else True),
    )
    return json_response(Ok(True))


async def get_alerts(request: web.Request) -> web.Response:
    """The spend-alert settings (defaults when never set)."""
    current = await request.app[LEDGER].alerts(request[TENANT])
    if current is None:
        return json_response(AlertsOut([], None, True))
    thresholds = [usd(t) for t in current.thresholds_micros]
    return json_response(AlertsOut(thresholds, current.low_balance_pct, current.email_enabled))


async def top_up(request: web.Request) -> web.Response:
    """Operator only: add prepaid credit to a tenant."""
    body = await read_json(request, TopUpIn)
    tenant_id = request.match_info["tenant_id"]
    await request.app[DIRECTORY].get_tenant(tenant_id)
    amount = parse_usd(str(body.amount_usd), "amount_usd")
    new_balance = await request.app[LEDGER].top_up(tenant_id, amount, body.memo)
    return json_response(TopUpOut(tenant_id, float(Decimal(amount).scaleb(-6)), usd(new_balance)))


ROUTES = [
    Route(
        "GET",
        "/billing/agent-roles",
        agent_roles,
        "Rates per agent role",
        "billing",
        responses={200: AgentRoles},
    ),
    Route("GET", "/billing/balance", balance, "Balance", "billing", responses={200: Balance}),
    Route(
        "GET",
        "/billing/usage-summary",
        usage_summary,
        "Usage summary",
        "billing",
        responses={200: UsageSummary},
    ),
    Route(
        "PUT",
        "/billing/alerts",
        set_alerts,
        "Set spend alerts",
        "billing",
        body=AlertsIn,
        responses={200: Ok},
    ),
    Route(
        "GET", "/billing/alerts", get_alerts, "Spend alerts", "billing", responses={200: AlertsOut}
    ),
    Route(
        "POST",
        "/admin/tenants/{tenant_id}/top-up",
        top_up,
        "Operator: top up a tenant's balance",
        "admin",
        auth=Auth.ADMIN,
        body=TopUpIn,
        responses={200: TopUpOut},
    ),
]
