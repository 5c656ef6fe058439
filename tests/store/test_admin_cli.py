"""The admin CLI, run through ``gateway.cli.main([...])`` against a temporary SQLite file."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.store.secrets import Keyring

KEY_NEW = base64.urlsafe_b64encode(b"\x07" * 32).decode()
KEY_OLD = base64.urlsafe_b64encode(b"\x09" * 32).decode()
TWILIO_SID = "AC" + "0123456789abcdef" * 2


class Cli:
    """Runs the CLI and returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == 0, (argv, out, err)
        return out

    def json(self, *argv: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.ok(*argv, "--json"))
        return rows


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    for name in ("RYMI_MASTER_KEYS", "RYMI_PUBLIC_BASE_URL", "RYMI_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RYMI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RYMI_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/admin.db")
    return Cli(capsys)


@pytest.fixture
def migrated(cli: Cli) -> Cli:
    assert "database at revision" in cli.ok("db", "upgrade")
    return cli


def _tenant(cli: Cli, name: str = "Acme") -> str:
    out = cli.ok("tenants", "create", name)
    return out.split()[2]


def test_commands_refuse_an_unmigrated_database(cli: Cli) -> None:
    code, _, err = cli("tenants", "list")
    assert code == 1
    assert "run `rymi-gateway db upgrade`" in err
    code, out, _ = cli("db", "current")
    assert (code, "revision none" in out) == (1, True)
    cli.ok("db", "upgrade")
    cli.ok("db", "upgrade")  # again: nothing to do
    assert cli("db", "current")[0] == 0


def test_tenant_lifecycle(migrated: Cli) -> None:
    cli = migrated
    tenant = _tenant(cli)
    assert "max concurrent calls 5" in cli.ok("tenants", "set-limit", tenant, "5")
    assert "balance $12.50" in cli.ok("tenants", "top-up", tenant, "12.50", "--memo", "card")
    [row] = cli.json("tenants", "list")
    assert row == {
        "id": tenant,
        "name": "Acme",
        "max_concurrent_calls": 5,
        "active_carrier": None,
        "balance_micros": 12_500_000,
    }
    cli.ok("tenants", "set-limit", tenant, "none")
    assert cli.json("tenants", "list")[0]["max_concurrent_calls"] is None
    assert "Acme" in cli.ok("tenants", "list")  # the rich table


def test_agents_numbers_keys_and_carrier(migrated: Cli) -> None:
    cli = migrated
    tenant = _tenant(cli)
    out = cli.ok("agents", "create", tenant, "--name", "Desk", "--role", "executive", "--publish",
                 "--extra", '{"voice": "alloy"}')  # fmt: skip
    agent = out.split()[2]
    [listed] = cli.json("agents", "list", tenant)
    assert (listed["role"], listed["published"], listed["extra"]) == (
        "executive",
        True,
        {"voice": "alloy"},
    )
    assert "registered" in cli.ok("numbers", "add", tenant, "+14155550100", "--agent", agent)
    assert cli.json("numbers", "list", tenant) == [{"number": "+14155550100", "agent_id": agent}]
    cli.ok("numbers", "attach", tenant, "+14155550100", "none")
    assert cli.json("numbers", "list", tenant)[0]["agent_id"] is None

    out = cli.ok("keys", "create", tenant, "--label", "backend")
    plaintext = out.split("store it now): ")[1].strip()
    assert plaintext.startswith("rymi_")
    [key] = cli.json("keys", "list", tenant)
    assert plaintext.startswith(key["prefix"])
    assert plaintext not in cli.ok("keys", "list", tenant)
    cli.ok("keys", "revoke", tenant, key["id"])
    assert cli.json("keys", "list", tenant) == []

    out = cli.ok("carriers", "connect", tenant, "twilio", "--account-id", TWILIO_SID,
                 "--auth-token", "twilio-token-canary")  # fmt: skip
    assert "twilio connected" in out
    assert "twilio-token-canary" not in out
    assert cli.json("tenants", "list")[0]["active_carrier"] == "twilio"


def test_websocket_agent_gets_a_generated_secret_shown_once(migrated: Cli) -> None:
    tenant = _tenant(migrated)
    out = migrated.ok(
        "agents", "create", tenant, "--name", "LLM", "--pipeline", "wss://a.example/x"
    )
    assert "pipeline secret (shown once" in out
    assert migrated.json("agents", "list", tenant)[0]["pipeline"] == "wss://a.example/x"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-call-duration", "29"], "max_call_duration_s: expected an integer 30-7200"),
        (["--max-call-duration", "7201"], "max_call_duration_s: expected an integer 30-7200"),
        (["--role", "boss"], "role: expected one of operator, specialist, executive, concierge"),
        (["--extra", "[1"], "--extra: expected a JSON object"),
        (["--pipeline", "http://x"], "pipeline: expected a built-in agent"),
    ],
)
def test_invalid_agent_is_exit_2_and_writes_nothing(
    migrated: Cli, argv: list[str], message: str
) -> None:
    tenant = _tenant(migrated)
    code, _, err = migrated("agents", "create", tenant, "--name", "x", *argv)
    assert code == 2
    assert message in err
    assert migrated.json("agents", "list", tenant) == []


def test_refusals_are_exit_1_with_one_line(migrated: Cli) -> None:
    owner, other = _tenant(migrated, "owner"), _tenant(migrated, "other")
    migrated.ok("numbers", "add", owner, "+14155550111")
    code, _, err = migrated("numbers", "add", other, "+14155550111")
    assert (code, err.strip()) == (1, "error: number +14155550111: registered to another tenant")
    assert migrated.json("numbers", "list", other) == []
    code, _, err = migrated("tenants", "top-up", "no-such-tenant", "5")
    assert (code, "not found" in err) == (1, True)
    code, _, err = migrated("tenants", "top-up", owner, "1.0000001")
    assert (code, "amount_usd" in err) == (2, True)
    assert migrated.json("tenants", "list")[0]["balance_micros"] == 0


def test_bad_setting_is_exit_2_naming_the_variable(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RYMI_MASTER_KEYS", "not-a-key")
    code, _, err = cli("tenants", "list")
    assert code == 2
    assert err.startswith("error: RYMI_MASTER_KEYS: entry 1")


def test_demo_seed_is_idempotent(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RYMI_PUBLIC_BASE_URL", "https://gw.example.com")
    first = cli.ok("demo-seed")  # migrates on its own
    assert "https://gw.example.com/inbound/twilio" in first
    assert "API key (shown once): rymi_" in first
    second = cli.ok("demo-seed")
    assert "shown once" not in second
    [tenant] = cli.json("tenants", "list")
    assert tenant["balance_micros"] == 10_000_000
    [agent] = cli.json("agents", "list", tenant["id"])
    assert (agent["pipeline"], agent["published"]) == ("echo", True)
    assert cli.json("numbers", "list", tenant["id"]) == [
        {"number": "+15555550100", "agent_id": agent["id"]}
    ]
    assert len(cli.json("keys", "list", tenant["id"])) == 1
    assert tenant["id"] in second


def test_secrets_rotate_moves_everything_to_the_newest_key(
    migrated: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RYMI_MASTER_KEYS", KEY_OLD)
    tenant = _tenant(migrated)
    migrated.ok("carriers", "connect", tenant, "plivo", "--account-id", "MAXXXXXXXXXXXXXXXXXX",
                "--auth-token", "plivo-auth-token")  # fmt: skip
    monkeypatch.setenv("RYMI_MASTER_KEYS", f"{KEY_NEW},{KEY_OLD}")
    new_id = Keyring((base64.urlsafe_b64decode(KEY_NEW),)).newest_id
    old_id = Keyring((base64.urlsafe_b64decode(KEY_OLD),)).newest_id
    status = migrated.ok("secrets", "status")
    assert old_id in status
    assert "re-sealed 1 secrets" in migrated.ok("secrets", "rotate")
    monkeypatch.setenv("RYMI_MASTER_KEYS", KEY_NEW)  # the old key can go now
    status = migrated.ok("secrets", "status")
    assert new_id in status
    assert old_id not in status


def test_generate_key_prints_a_usable_master_key(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    key = cli.ok("secrets", "generate-key").strip()
    monkeypatch.setenv("RYMI_MASTER_KEYS", key)
    cli.ok("db", "upgrade")
    assert cli("secrets", "status")[0] == 0


def test_building_the_parser_imports_nothing_heavy() -> None:
    heavy = ("sqlalchemy", "rich", "cryptography", "alembic")
    code = (
        "import sys, gateway.cli; gateway.cli.build_parser(); "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("micros", "shown"),
    [
        (0, "$0.00"),
        (12_500_000, "$12.50"),
        (25_000, "$0.025"),
        (-150_000, "-$0.15"),
        (1, "$0.000001"),
    ],
)
def test_money_is_shown_with_cents_and_exact_sub_cents(micros: int, shown: str) -> None:
    from gateway.admin_commands import _usd

    assert _usd(micros) == shown
