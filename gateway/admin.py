"""Admin subcommands of ``rymi-gateway``: database, tenants, agents, numbers, keys, secrets.

This module imports only the standard library at the top, so that building the parser
(and ``rymi-gateway --version``) stays instant: commands name their handler in
:mod:`gateway.admin_commands`, which is imported (with the store) only to run one.
Settings come from the ``RYMI_*`` environment (see :mod:`gateway.config`).

Exit codes: 0 done; 1 refused (not found, conflict, bad secret, backend failure);
2 invalid input (bad option value, bad setting). Errors print one line to stderr,
never a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from gateway.config import Settings
    from gateway.store.directory import Directory
    from gateway.store.ledger import Ledger
    from gateway.store.secrets import Keyring

__all__ = ["Context", "register"]

Handler = Callable[["Context", argparse.Namespace], Awaitable[int]]
"""A command: runs with the context and the parsed arguments, returns the exit code."""


class Context:
    """What a command works with; built per run and closed after it."""

    def __init__(self, settings: Settings, console: Console) -> None:
        from gateway.store.sql.engine import create_engine

        self.settings = settings
        self.console = console
        self.engine = create_engine(settings.database_url)
        self._keyring: Keyring | None = None

    @property
    def keyring(self) -> Keyring:
        """The master keys (loaded on first use: dev mode may create the key file)."""
        from gateway.store.secrets import load_keyring

        if self._keyring is None:
            self._keyring = load_keyring(self.settings)
        return self._keyring

    @property
    def directory(self) -> Directory:
        """The directory over this run's engine."""
        from gateway.store.directory import Directory

        return Directory(self.engine, self.keyring)

    @property
    def ledger(self) -> Ledger:
        """The ledger over this run's engine."""
        from gateway.store.ledger import Ledger

        return Ledger(self.engine)

    async def require_schema(self) -> None:
        """Refuse to run against a database that is not migrated to this version."""
        from gateway.store.sql.migrate import require_head

        await require_head(self.settings.database_url)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the admin subcommands to the ``rymi-gateway`` parser."""
    db = _group(subparsers, "db", "database schema (Alembic migrations)")
    _command(db, "upgrade", "db_upgrade", "migrate the schema to this version", False)
    _command(db, "current", "db_current", "show the schema revision", False)

    tenants = _group(subparsers, "tenants", "tenants, limits and balances")
    cmd = _command(tenants, "create", "tenant_create", "create a tenant")
    cmd.add_argument("name")
    cmd.add_argument("--max-concurrent-calls", type=_limit, default=None, metavar="N|none")
    cmd = _command(tenants, "list", "tenant_list", "list tenants with balances")
    _json(cmd)
    cmd = _command(tenants, "set-limit", "tenant_set_limit", "set the concurrent call cap")
    cmd.add_argument("tenant")
    cmd.add_argument("max_concurrent_calls", type=_limit, metavar="N|none")
    cmd = _command(tenants, "top-up", "tenant_top_up", "add prepaid credit (USD)")
    cmd.add_argument("tenant")
    cmd.add_argument("amount_usd", metavar="AMOUNT_USD")
    cmd.add_argument("--memo", default=None)

    carriers = _group(subparsers, "carriers", "carrier credentials (one active carrier per tenant)")
    cmd = _command(carriers, "connect", "carrier_connect", "store credentials, make active")
    cmd.add_argument("tenant")
    cmd.add_argument("carrier", choices=["twilio", "plivo", "vonage"])
    cmd.add_argument("--account-id", required=True, help="Twilio SID / Plivo auth id / Vonage key")
    for secret in ("auth-token", "api-secret", "signature-secret"):
        cmd.add_argument(
            f"--{secret}",
            default=None,
            help=f"or set RYMI_{secret.upper().replace('-', '_')}; prompted for when missing",
        )
    cmd = _command(carriers, "disconnect", "carrier_disconnect", "forget the credentials")
    cmd.add_argument("tenant")

    agents = _group(subparsers, "agents", "agents")
    cmd = _command(agents, "create", "agent_create", "create an agent")
    cmd.add_argument("tenant")
    cmd.add_argument("--name", required=True)
    cmd.add_argument("--role", default="operator")
    cmd.add_argument("--pipeline", default="echo", help="built-in name (echo) or ws(s):// URL")
    cmd.add_argument("--secret", default=None, help="shared secret for a URL pipeline")
    cmd.add_argument("--max-call-duration", type=int, default=600, metavar="SECONDS")
    cmd.add_argument("--barge-in", default="on", help="on (default) or off")
    cmd.add_argument("--extra", default=None, metavar="JSON", help="other agent fields")
    cmd.add_argument("--publish", action="store_true")
    cmd = _command(agents, "list", "agent_list", "list a tenant's agents")
    cmd.add_argument("tenant")
    _json(cmd)
    cmd = _command(agents, "publish", "agent_publish", "publish (or --draft) an agent")
    cmd.add_argument("tenant")
    cmd.add_argument("agent")
    cmd.add_argument("--draft", action="store_true", help="turn it back into a draft")

    numbers = _group(subparsers, "numbers", "phone numbers (E.164)")
    cmd = _command(numbers, "add", "number_add", "register a number to a tenant")
    cmd.add_argument("tenant")
    cmd.add_argument("number")
    cmd.add_argument("--agent", default=None)
    cmd = _command(numbers, "attach", "number_attach", "attach a number to an agent")
    cmd.add_argument("tenant")
    cmd.add_argument("number")
    cmd.add_argument("agent", help="agent id, or none to detach")
    cmd = _command(numbers, "list", "number_list", "list a tenant's numbers")
    cmd.add_argument("tenant")
    _json(cmd)
    cmd = _command(numbers, "remove", "number_remove", "remove a number")
    cmd.add_argument("tenant")
    cmd.add_argument("number")

    keys = _group(subparsers, "keys", "API keys (shown once, stored hashed)")
    cmd = _command(keys, "create", "key_create", "create a secret or publishable key")
    cmd.add_argument("tenant")
    cmd.add_argument("--label", default=None)
    cmd.add_argument("--publishable", metavar="AGENT", default=None, help="bound to this agent")
    cmd = _command(keys, "list", "key_list", "list a tenant's active keys")
    cmd.add_argument("tenant")
    _json(cmd)
    cmd = _command(keys, "revoke", "key_revoke", "revoke a key")
    cmd.add_argument("tenant")
    cmd.add_argument("key_id")

    secrets = _group(subparsers, "secrets", "master keys and secrets at rest")
    _command(secrets, "generate-key", "secret_generate", "print a new master key", False)
    _command(secrets, "status", "secret_status", "count secrets per master key")
    _command(secrets, "rotate", "secret_rotate", "re-seal all under the newest key")

    calls = _group(subparsers, "calls", "call records")
    cmd = _command(calls, "list", "call_list", "a tenant's recent calls")
    cmd.add_argument("tenant")
    cmd.add_argument("--limit", type=int, default=20)
    _json(cmd)
    _command(calls, "reap", "call_reap", "finalize calls whose gateway died (one pass)")

    cmd = subparsers.add_parser(
        "demo-seed",
        help="a demo tenant with a number on the echo agent (idempotent)",
        description="Create (or show) the demo tenant, echo agent and number.",
    )
    cmd.add_argument("--number", default=None, help="your carrier number (E.164)")
    cmd.set_defaults(handler="demo_seed", needs_schema=False)


def run(args: argparse.Namespace) -> int:
    """Run the chosen admin command; returns the exit code."""
    from rich.console import Console

    from gateway.config import Settings
    from gateway.errors import ConfigError, GatewayError

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        settings = Settings.from_env(os.environ)
        return asyncio.run(_run(args, settings, Console(highlight=False, soft_wrap=True)))
    except ConfigError as exc:  # ValidationError included: the input was wrong
        err.print(f"error: {exc}", markup=False)
        return 2
    except GatewayError as exc:
        err.print(f"error: {exc}", markup=False)
        return 1


async def _run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    context = Context(settings, console)
    try:
        if args.needs_schema:
            await context.require_schema()
        from gateway import admin_commands

        handler: Handler = getattr(admin_commands, args.handler)
        return await handler(context, args)
    finally:
        await context.engine.dispose()


def read_secret(value: str | None, option: str) -> str | None:
    """An option's secret: the flag, else ``RYMI_<OPTION>``, else a prompt on a terminal."""
    if value:
        return value
    env = os.environ.get(f"RYMI_{option.upper().replace('-', '_')}")
    if env:
        return env
    if sys.stdin.isatty():
        return getpass.getpass(f"{option}: ") or None
    return None


def print_json(console: Console, rows: Sequence[dict[str, Any]]) -> None:
    """Machine-readable output for ``--json``."""
    console.print_json(json.dumps(list(rows)))


def _group(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    group = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
    return group


def _command(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: str,
    help_text: str,
    needs_schema: bool = True,
) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler, needs_schema=needs_schema)
    return parser


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _limit(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or none, got {text!r}") from None
