"""The admin commands themselves (parsed by :mod:`gateway.admin`, imported only to run).

Each command is ``async def name(ctx, args) -> exit code``. Tables are drawn with rich;
list commands take ``--json`` for scripts. Plaintext API keys are printed once, at
creation, and never again; carrier secrets are never printed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from rich.table import Table

from gateway.admin import Context, print_json, read_secret
from gateway.errors import NotFoundError, ValidationError
from gateway.metering import micros_to_usd, usd_to_micros
from gateway.store.models import (
    CarrierCredentials,
    KeyKind,
    PlivoCredentials,
    TwilioCredentials,
    VonageCredentials,
)
from gateway.store.reaper import Reaper
from gateway.store.secrets import Secret, generate_master_key, key_usage, rotate
from gateway.store.sql.migrate import current_revision, head_revision, upgrade

__all__ = [
    "DEMO_AGENT_NAME",
    "DEMO_NUMBER",
    "DEMO_TENANT_ID",
    "agent_create",
    "agent_list",
    "agent_publish",
    "call_list",
    "call_reap",
    "carrier_connect",
    "carrier_disconnect",
    "db_current",
    "db_upgrade",
    "demo_seed",
    "key_create",
    "key_list",
    "key_revoke",
    "number_add",
    "number_attach",
    "number_list",
    "number_remove",
    "secret_generate",
    "secret_rotate",
    "secret_status",
    "tenant_create",
    "tenant_list",
    "tenant_set_limit",
    "tenant_top_up",
]

DEMO_TENANT_ID = "00000000-0000-4000-8000-00000000de70"
"""The demo tenant's well-known id (so ``demo-seed`` is idempotent)."""
DEMO_AGENT_NAME = "Echo (demo)"
DEMO_NUMBER = "+15555550100"
"""A fictional number (NANP 555-01xx); pass ``--number`` with a real one of yours."""
DEMO_CREDIT_MICROS = 10_000_000


def _usd(micros: int) -> str:
    """Dollars with cents always shown and sub-cent digits only when there are some."""
    whole, _, fraction = f"{micros_to_usd(abs(micros)):,.6f}".partition(".")
    sign = "-" if micros < 0 else ""
    return f"{sign}${whole}.{fraction.rstrip('0').ljust(2, '0')}"


# -- db ----------------------------------------------------------------------------


async def db_upgrade(ctx: Context, args: argparse.Namespace) -> int:
    """Migrate the schema to this version's head."""
    revision = await upgrade(ctx.settings.database_url)
    ctx.console.print(f"database at revision {revision}")
    return 0


async def db_current(ctx: Context, args: argparse.Namespace) -> int:
    """Print the schema revision (exit 1 when behind this version)."""
    current, head = await current_revision(ctx.settings.database_url), head_revision()
    ctx.console.print(f"database at revision {current or 'none'} (this version needs {head})")
    return 0 if current == head else 1


# -- tenants -------------------------------------------------------------------------


async def tenant_create(ctx: Context, args: argparse.Namespace) -> int:
    """Create a tenant and print its id."""
    tenant = await ctx.directory.create_tenant(args.name, args.max_concurrent_calls)
    ctx.console.print(f"created tenant {tenant.id} ({tenant.name})")
    return 0


def _show(
    ctx: Context,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    title: str,
    columns: tuple[str, ...],
    cells: Callable[[dict[str, Any]], list[str]],
) -> int:
    """Print ``rows`` as JSON (``--json``) or as a table of ``cells(row)``; exit code 0."""
    if args.json:
        print_json(ctx.console, rows)
        return 0
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*cells(row))
    ctx.console.print(table)
    return 0


async def tenant_list(ctx: Context, args: argparse.Namespace) -> int:
    """Tenants with limits, carriers and balances."""
    rows: list[dict[str, Any]] = []
    for tenant in await ctx.directory.list_tenants():
        balance = await ctx.ledger.balance_micros(tenant.id)
        rows.append(
            {
                "id": tenant.id,
                "name": tenant.name,
                "max_concurrent_calls": tenant.max_concurrent_calls,
                "active_carrier": tenant.active_carrier,
                "balance_micros": balance,
            }
        )
    columns = ("id", "name", "max calls", "carrier", "balance")
    return _show(ctx, args, rows, "tenants", columns, _tenant_cells)


def _tenant_cells(row: dict[str, Any]) -> list[str]:
    limit = row["max_concurrent_calls"]
    return [
        row["id"],
        row["name"],
        "no cap" if limit is None else str(limit),
        row["active_carrier"] or "-",
        _usd(row["balance_micros"]),
    ]


async def tenant_set_limit(ctx: Context, args: argparse.Namespace) -> int:
    """Set or remove the concurrent call cap."""
    tenant = await ctx.directory.set_max_concurrent_calls(args.tenant, args.max_concurrent_calls)
    limit = tenant.max_concurrent_calls
    ctx.console.print(
        f"tenant {tenant.id}: max concurrent calls {'no cap' if limit is None else limit}"
    )
    return 0


async def tenant_top_up(ctx: Context, args: argparse.Namespace) -> int:
    """Add prepaid credit and print the new balance."""
    amount = usd_to_micros(args.amount_usd, "amount_usd")
    balance = await ctx.ledger.top_up(args.tenant, amount, args.memo)
    ctx.console.print(f"tenant {args.tenant}: balance {_usd(balance)}")
    return 0


# -- carriers ------------------------------------------------------------------------


def _credentials(args: argparse.Namespace) -> CarrierCredentials:
    def secret(option: str, required: bool = True) -> Secret | None:
        value = read_secret(getattr(args, option.replace("-", "_")), option)
        if value is None and required:
            raise ValidationError(f"--{option}", f"required for {args.carrier}")
        return None if value is None else Secret(value)

    if args.carrier == "twilio":
        return TwilioCredentials(args.account_id, _required(secret("auth-token")))
    if args.carrier == "plivo":
        return PlivoCredentials(args.account_id, _required(secret("auth-token")))
    return VonageCredentials(
        args.account_id, _required(secret("api-secret")), secret("signature-secret", False)
    )


def _required(value: Secret | None) -> Secret:
    assert value is not None  # secret(required=True) raised otherwise
    return value


async def carrier_connect(ctx: Context, args: argparse.Namespace) -> int:
    """Store carrier credentials (sealed) and make that carrier active."""
    tenant = await ctx.directory.connect_carrier(args.tenant, _credentials(args))
    ctx.console.print(f"tenant {tenant.id}: {tenant.active_carrier} connected")
    return 0


async def carrier_disconnect(ctx: Context, args: argparse.Namespace) -> int:
    """Forget the tenant's carrier credentials."""
    tenant = await ctx.directory.disconnect_carrier(args.tenant)
    ctx.console.print(f"tenant {tenant.id}: carrier disconnected")
    return 0


# -- agents --------------------------------------------------------------------------


async def agent_create(ctx: Context, args: argparse.Namespace) -> int:
    """Create an agent; a URL pipeline without --secret gets a generated one, shown once."""
    import secrets as token

    extra: Any = {}
    if args.extra:
        try:
            extra = json.loads(args.extra)
        except json.JSONDecodeError:
            raise ValidationError("--extra", "expected a JSON object") from None
    secret_text = args.secret
    generated = args.pipeline != "echo" and not secret_text
    if generated:
        secret_text = token.token_urlsafe(32)
    agent = await ctx.directory.create_agent(
        args.tenant,
        name=args.name,
        role=args.role,
        pipeline=args.pipeline,
        pipeline_secret=Secret(secret_text) if secret_text else None,
        max_call_duration_s=args.max_call_duration,
        barge_in=args.barge_in,
        published=args.publish,
        extra=extra,
    )
    state = "published" if agent.published else "draft"
    ctx.console.print(f"created agent {agent.id} ({agent.name}, {agent.role}, {state})")
    if generated:
        ctx.console.print(f"pipeline secret (shown once, give it to your agent): {secret_text}")
    return 0


async def agent_list(ctx: Context, args: argparse.Namespace) -> int:
    """A tenant's agents."""
    agents = await ctx.directory.list_agents(args.tenant)
    rows: list[dict[str, Any]] = [
        {
            "id": a.id,
            "name": a.name,
            "role": a.role.value,
            "published": a.published,
            "max_call_duration_s": a.max_call_duration_s,
            "pipeline": a.pipeline,
            "barge_in": a.barge_in.value,
            "extra": a.extra,
        }
        for a in agents
    ]
    columns = ("id", "name", "role", "state", "max s", "pipeline")
    return _show(ctx, args, rows, "agents", columns, _agent_cells)


def _agent_cells(r: dict[str, Any]) -> list[str]:
    state = "published" if r["published"] else "draft"
    return [r["id"], r["name"], r["role"], state, str(r["max_call_duration_s"]), r["pipeline"]]


async def agent_publish(ctx: Context, args: argparse.Namespace) -> int:
    """Publish an agent, or turn it back into a draft."""
    agent = await ctx.directory.set_published(args.tenant, args.agent, not args.draft)
    ctx.console.print(f"agent {agent.id}: {'published' if agent.published else 'draft'}")
    return 0


# -- numbers -------------------------------------------------------------------------


async def number_add(ctx: Context, args: argparse.Namespace) -> int:
    """Register a number (again: updates its agent)."""
    number, created = await ctx.directory.add_number(args.tenant, args.number, args.agent)
    verb = "registered" if created else "already registered"
    ctx.console.print(
        f"{number.number} {verb} to tenant {number.tenant_id}, agent {number.agent_id or '-'}"
    )
    return 0


async def number_attach(ctx: Context, args: argparse.Namespace) -> int:
    """Attach a number to an agent (``none`` detaches)."""
    agent = None if args.agent.lower() == "none" else args.agent
    number = await ctx.directory.attach_number(args.tenant, args.number, agent)
    ctx.console.print(f"{number.number}: agent {number.agent_id or '- (detached)'}")
    return 0


async def number_list(ctx: Context, args: argparse.Namespace) -> int:
    """A tenant's numbers."""
    numbers = await ctx.directory.list_numbers(args.tenant)
    rows = [{"number": n.number, "agent_id": n.agent_id} for n in numbers]
    return _show(
        ctx,
        args,
        rows,
        "numbers",
        ("number", "agent"),
        lambda r: [r["number"], r["agent_id"] or "-"],
    )


async def number_remove(ctx: Context, args: argparse.Namespace) -> int:
    """Remove a number from a tenant."""
    await ctx.directory.remove_number(args.tenant, args.number)
    ctx.console.print(f"{args.number} removed")
    return 0


# -- keys ----------------------------------------------------------------------------


async def key_create(ctx: Context, args: argparse.Namespace) -> int:
    """Create an API key and print its plaintext once."""
    kind = KeyKind.PUBLISHABLE if args.publishable else KeyKind.SECRET
    created = await ctx.directory.create_api_key(args.tenant, kind, args.label, args.publishable)
    ctx.console.print(f"created {kind.value} key {created.key.id}")
    ctx.console.print(f"key (shown once, store it now): {created.plaintext.reveal()}")
    return 0


async def key_list(ctx: Context, args: argparse.Namespace) -> int:
    """A tenant's active keys (prefixes only)."""
    keys = await ctx.directory.list_api_keys(args.tenant)
    rows: list[dict[str, Any]] = [
        {
            "id": k.id,
            "kind": k.kind.value,
            "prefix": k.key_prefix,
            "label": k.label,
            "agent_id": k.agent_id,
        }
        for k in keys
    ]
    columns = ("id", "kind", "prefix", "label")
    return _show(
        ctx, args, rows, "api keys", columns,
        lambda r: [r["id"], r["kind"], r["prefix"] + "…", r["label"] or "-"],
    )  # fmt: skip


async def key_revoke(ctx: Context, args: argparse.Namespace) -> int:
    """Revoke a key."""
    await ctx.directory.revoke_api_key(args.tenant, args.key_id)
    ctx.console.print(f"key {args.key_id} revoked")
    return 0


# -- secrets -------------------------------------------------------------------------


async def secret_generate(ctx: Context, args: argparse.Namespace) -> int:
    """Print a new master key for RYMI_MASTER_KEYS (put it first to make it the newest)."""
    ctx.console.print(generate_master_key())
    return 0


async def secret_status(ctx: Context, args: argparse.Namespace) -> int:
    """How many secrets each master key seals; unconfigured keys are flagged."""
    usage = await key_usage(ctx.engine)
    configured = ctx.keyring.key_ids
    table = Table("key id", "secrets", "configured", title="secrets at rest")
    for key_id in dict.fromkeys([*configured, *usage]):
        mark = "newest" if key_id == configured[0] else ("yes" if key_id in configured else "NO")
        table.add_row(key_id, str(usage.get(key_id, 0)), mark)
    ctx.console.print(table)
    return 0 if set(usage) <= set(configured) else 1


async def secret_rotate(ctx: Context, args: argparse.Namespace) -> int:
    """Re-seal every secret under the newest master key."""
    result = await rotate(ctx.engine, ctx.keyring)
    ctx.console.print(f"re-sealed {result.resealed} secrets under key {ctx.keyring.newest_id}")
    for row in result.unreadable:
        ctx.console.print(f"[red]did not open[/red]: {row}")
    return 0 if not result.unreadable else 1


# -- calls ---------------------------------------------------------------------------


async def call_list(ctx: Context, args: argparse.Namespace) -> int:
    """A tenant's recent calls."""
    calls = await ctx.ledger.list_calls(args.tenant, args.limit)
    rows: list[dict[str, Any]] = [
        {
            "id": c.id,
            "status": c.status.value,
            "number": c.number,
            "carrier": c.carrier,
            "audio_ms": c.audio_ms,
            "billable_units": c.billable_units,
            "cost_micros": c.cost_micros,
            "end_reason": c.end_reason,
        }
        for c in calls
    ]
    columns = ("id", "status", "number", "audio s", "units", "cost", "reason")
    return _show(ctx, args, rows, "calls", columns, _call_cells)


def _call_cells(r: dict[str, Any]) -> list[str]:
    cost = "-" if r["cost_micros"] is None else _usd(r["cost_micros"])
    return [
        r["id"], r["status"], r["number"], f"{r['audio_ms'] / 1000:.1f}",
        str(r["billable_units"] or "-"), cost, r["end_reason"] or "-",
    ]  # fmt: skip


async def call_reap(ctx: Context, args: argparse.Namespace) -> int:
    """One reaper pass with the configured threshold."""
    reaper = Reaper(ctx.ledger, ctx.settings.reaper_stale_after_s * 1000)
    reaped = await reaper.reap_once()
    ctx.console.print(f"reaped {len(reaped)} calls")
    return 0


# -- demo ----------------------------------------------------------------------------


async def demo_seed(ctx: Context, args: argparse.Namespace) -> int:
    """Migrate, then create (or find) the demo tenant, echo agent and number; print wiring."""
    await upgrade(ctx.settings.database_url)
    directory, ledger = ctx.directory, ctx.ledger
    try:
        tenant = await directory.get_tenant(DEMO_TENANT_ID)
        fresh = False
    except NotFoundError:
        tenant = await directory.create_tenant("Demo", tenant_id=DEMO_TENANT_ID)
        fresh = True
    agent = next(
        (a for a in await directory.list_agents(tenant.id) if a.name == DEMO_AGENT_NAME), None
    )
    if agent is None:
        agent = await directory.create_agent(tenant.id, name=DEMO_AGENT_NAME, published=True)
    elif not agent.published:
        agent = await directory.set_published(tenant.id, agent.id, True)
    number, _ = await directory.add_number(tenant.id, args.number or DEMO_NUMBER, agent.id)
    key_line = "API key: created on the first run (list with `rymi-gateway keys list`)"
    if fresh:
        await ledger.top_up(tenant.id, DEMO_CREDIT_MICROS, "demo credit")
        created = await directory.create_api_key(tenant.id, label="demo")
        key_line = f"API key (shown once): {created.plaintext.reveal()}"
    balance = await ledger.balance_micros(tenant.id)
    _print_demo(ctx, tenant.id, agent.id, number.number, balance, key_line)
    return 0


def _print_demo(
    ctx: Context, tenant_id: str, agent_id: str, number: str, balance: int, key_line: str
) -> None:
    base = ctx.settings.base_url
    console = ctx.console
    console.print(f"demo tenant  {tenant_id}  (balance {_usd(balance)})")
    console.print(f"echo agent   {agent_id}  (published)")
    console.print(f"number       {number}")
    console.print(key_line)
    # Plain lines, not a table: URLs must survive copy-paste at any terminal width.
    console.print("\nPoint your carrier number's voice webhook (HTTP POST) at:")
    console.print(f"  Twilio  (A call comes in)       {base}/inbound/twilio")
    console.print(f"  Plivo   (Application Answer URL) {base}/inbound/plivo")
    console.print(f"  Vonage  (Voice Answer URL)       {base}/inbound/vonage")
    if ctx.settings.public_base_url is None:
        console.print(
            "Set RYMI_PUBLIC_BASE_URL to the https:// URL carriers reach (e.g. a tunnel)."
        )
    console.print(
        f"Then: rymi-gateway carriers connect {tenant_id} twilio --account-id AC... "
        "(the auth token is prompted for)"
    )
