"""bastion doctor: what it reports, and that it fails on what must be fixed."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def doctor(home: Path) -> tuple[int, dict[str, dict[str, str]]]:
    code, out = run("doctor", "--home", str(home), "--json")
    return code, {c["name"]: c for c in json.loads(out)["checks"]}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    assert run("init", "--home", str(path))[0] == 0
    assert run("accounts", "create", "alice", "--home", str(path))[0] == 0
    return path


def test_a_fresh_installation_passes_with_advice(home: Path) -> None:
    code, checks = doctor(home)
    assert code == 0
    assert {c["level"] for c in checks.values()} <= {"ok", "warn"}
    assert checks["database file"]["level"] == "ok"  # init made it 0600
    assert checks["master-key provider"]["level"] == "warn"
    assert checks["ledger"]["level"] == "ok"


def test_readable_secrets_fail(home: Path) -> None:
    os.chmod(home / "bastion.toml", 0o644)
    os.chmod(home / "vault" / "master-1.key", 0o600)
    code, checks = doctor(home)
    assert code == 1
    assert checks["settings file"]["level"] == "fail"
    assert "chmod 600" in checks["settings file"]["fix"]


def test_a_readable_master_keyfile_stops_everything_and_doctor_says_why(home: Path) -> None:
    os.chmod(home / "vault" / "master-1.key", 0o644)
    code, out = run("accounts", "create", "bob", "--home", str(home))
    assert code == 2  # the vault refuses to load it at all: nothing runs until it is fixed
    assert "group or others" in out
    code, checks = doctor(home)
    assert code == 1  # doctor still reports, with the checks it can make without the vault
    failed = {name: c for name, c in checks.items() if c["level"] == "fail"}
    assert list(failed) == ["master keyfile master-1.key"]
    assert "chmod 600" in failed["master keyfile master-1.key"]["fix"]


def test_keys_without_allow_list_warn_and_fenced_ones_do_not(home: Path) -> None:
    _, out = run("keys", "create", "--account", "alice", "--generate", "--home", str(home), "--json")
    open_key = json.loads(out)["key_id"]
    _, out = run(
        "keys",
        "create",
        "--account",
        "alice",
        "--alg",
        "hmac",
        "--allow-ip",
        "10.0.0.0/8",
        "--home",
        str(home),
        "--json",
    )
    fenced = json.loads(out)["key_id"]
    _, checks = doctor(home)
    assert checks[f"key {open_key}"]["level"] == "warn"
    assert f"key {fenced}" not in checks
    assert checks["private keys in the home"]["level"] == "warn"


def test_a_tampered_ledger_fails(home: Path) -> None:
    with sqlite3.connect(home / "bastion.db") as db:
        db.execute("UPDATE ledger_entries SET body = replace(body, 'alice', 'mallory') WHERE idx = 0")
    code, checks = doctor(home)
    assert code == 1
    assert checks["ledger"]["level"] == "fail"
    assert "entry 0" in checks["ledger"]["message"]


def test_unused_master_keys_are_pointed_out(home: Path) -> None:
    run("keys", "create", "--account", "alice", "--alg", "hmac", "--home", str(home))
    assert run("vault", "rotate-master", "--home", str(home))[0] == 0
    _, checks = doctor(home)
    assert checks["master keys"]["level"] == "warn"
    assert "retire" in checks["master keys"]["fix"]


def test_trade_keys_without_size_limits_and_halts_are_pointed_out(home: Path, tmp_path: Path) -> None:
    create = ("keys", "create", "--account", "alice", "--scopes", "read,trade", "--generate", "--json")
    _, out = run(*create, "--home", str(home))
    unlimited = json.loads(out)["key_id"]
    _, out = run(*create, "--max-order-notional", "1000", "--home", str(home))
    limited = json.loads(out)["key_id"]
    _, checks = doctor(home)
    assert checks[f"limits of key {unlimited}"]["level"] == "warn"
    assert f"limits of key {limited}" not in checks

    policy = tmp_path / "account.json"
    policy.write_text('{"max_position": "10"}')
    assert run("policy", "set", "alice", "--file", str(policy), "--home", str(home))[0] == 0
    assert run("killswitch", "on", "--account", "alice", "--home", str(home))[0] == 0
    code, checks = doctor(home)
    assert f"limits of key {unlimited}" not in checks  # the account's defaults cover it
    assert checks["kill switch (account alice)"]["level"] == "warn" and code == 0
    assert "killswitch off --account alice" in checks["kill switch (account alice)"]["fix"]


def test_no_alert_sink_warns_and_one_sink_is_ok(home: Path) -> None:
    _, checks = doctor(home)
    assert checks["alert sinks"]["level"] == "warn"
    text = (home / "bastion.toml").read_text()
    (home / "bastion.toml").write_text(
        text.replace("allowed_private_networks = []", 'allowed_private_networks = ["127.0.0.1/32"]')
    )
    added = run(
        "alerts",
        "add",
        "--webhook",
        "http://127.0.0.1:9/hook",
        "--allow-private-network",
        "--home",
        str(home),
    )
    assert added[0] == 0
    _, checks = doctor(home)
    assert checks["alert sinks"] == checks["alert sinks"] | {"level": "ok", "message": "1 configured"}
