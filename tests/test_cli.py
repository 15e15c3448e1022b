"""The CLI in process: init, accounts, keys, and their errors."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from bastion.cli import app
from bastion.crypto.keys import generate_ed25519

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    code, out = run("init", "--home", str(path))
    assert code == 0, out
    return path


def test_init_makes_a_private_home_and_is_idempotent(home: Path) -> None:
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "bastion.toml").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home / "tls" / "key.pem").st_mode) == 0o600
    assert (home / "bastion.db").exists()
    code, out = run("init", "--home", str(home), "--json")
    assert code == 0
    assert json.loads(out) == {"home": str(home), "created": False, "added": []}
    assert stat.S_IMODE(os.stat(home / "vault" / "master-1.key").st_mode) == 0o600


def test_init_adds_the_vault_to_an_older_home(home: Path) -> None:
    (home / "vault" / "master-1.key").unlink()
    code, out = run("init", "--home", str(home), "--json")
    assert code == 0
    assert json.loads(out)["added"] == [str(home / "vault" / "master-1.key")]


def test_account_and_key_lifecycle(home: Path, tmp_path: Path) -> None:
    assert run("accounts", "create", "alice", "--home", str(home))[0] == 0
    code, out = run("accounts", "create", "alice", "--home", str(home))
    assert code == 2
    assert "already exists" in out
    public = (
        generate_ed25519()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "bot.pub").write_bytes(public)
    code, out = run(
        "keys",
        "create",
        "--account",
        "alice",
        "--scopes",
        "read,trade",
        "--public-key",
        str(tmp_path / "bot.pub"),
        "--home",
        str(home),
        "--json",
    )
    assert code == 0, out
    created = json.loads(out)
    assert created["scopes"] == ["read", "trade"]
    assert "private_key_path" not in created
    code, out = run("keys", "list", "--home", str(home), "--json")
    listed = json.loads(out)["keys"]
    assert [(k["key_id"], k["state"]) for k in listed] == [(created["key_id"], "active")]
    assert run("keys", "revoke", created["key_id"], "--home", str(home))[0] == 0
    assert json.loads(run("keys", "list", "--home", str(home), "--json")[1])["keys"][0]["state"] == "revoked"
    assert run("keys", "revoke", created["key_id"], "--home", str(home))[0] == 2


def test_generated_keys_are_written_0600_once(home: Path) -> None:
    run("accounts", "create", "bob", "--home", str(home))
    code, out = run("keys", "create", "--account", "bob", "--generate", "--home", str(home), "--json")
    assert code == 0
    path = Path(json.loads(out)["private_key_path"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "nobody", "--generate"], "no account"),
        (["--account", "alice", "--generate", "--scopes", "withdraw"], "unknown scope"),
        (["--account", "alice"], "exactly one"),
        (["--account", "alice", "--generate", "--expires-in", "forever"], "durations"),
    ],
)
def test_key_creation_errors_are_clear(home: Path, args: list[str], message: str) -> None:
    run("accounts", "create", "alice", "--home", str(home))
    code, out = run("keys", "create", *args, "--home", str(home))
    assert code == 2
    assert message in out
    assert "Traceback" not in out


def test_bad_account_names_are_refused(home: Path) -> None:
    for name in ("Alice", "a b", "-x", "x" * 64, "../etc"):
        assert run("accounts", "create", name, "--home", str(home))[0] == 2


def test_commands_on_an_uninitialised_home_explain(tmp_path: Path) -> None:
    code, out = run("keys", "list", "--home", str(tmp_path / "none"))
    assert code == 2
    assert "bastion init" in out


SAFE_CREDENTIAL = (
    # pragma: allowlist nextline secret - test data
    b'{"api_key": "venue-key-123", "api_secret": "venue-secret-xyz-very-long", '
    b'"paper_api_restrictions": {"ipRestrict": true, "enableReading": true, '
    b'"enableSpotAndMarginTrading": true, '
    b'"enableWithdrawals": false, "enableInternalTransfer": false, "permitsUniversalTransfer": false}}'
)


def run_stdin(data: bytes, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=data)
    return result.exit_code, result.output


def test_a_trade_only_credential_is_stored_sealed(home: Path) -> None:
    run("accounts", "create", "alice", "--home", str(home))
    code, out = run_stdin(
        SAFE_CREDENTIAL, "venues", "add", "--account", "alice", "--home", str(home), "--json"
    )
    assert code == 0, out
    added = json.loads(out)
    assert added["warnings"] == []
    assert added["permissions"]["can_withdraw"] is False
    listed = json.loads(run("venues", "list", "--home", str(home), "--json")[1])["credentials"]
    assert [c["credential_id"] for c in listed] == [added["credential_id"]]
    database = b"".join(p.read_bytes() for p in home.glob("bastion.db*"))
    assert database
    assert b"venue-secret-xyz-very-long" not in database
    assert b"venue-key-123" not in database


def test_a_removed_credential_is_gone_and_recorded(home: Path) -> None:
    run("accounts", "create", "alice", "--home", str(home))
    code, out = run_stdin(
        SAFE_CREDENTIAL, "venues", "add", "--account", "alice", "--home", str(home), "--json"
    )
    credential = json.loads(out)["credential_id"]
    code, out = run("venues", "remove", credential, "--home", str(home), "--json")
    assert code == 0, out
    assert json.loads(out) == {"credential_id": credential, "account": "alice", "removed": True}
    assert json.loads(run("venues", "list", "--home", str(home), "--json")[1])["credentials"] == []
    code, out = run("venues", "remove", credential, "--home", str(home))
    assert code == 2 and "no venue credential" in out
    code, out = run("ledger", "export", "--out", str(home / "x.jsonl"), "--home", str(home))
    assert code == 0, out
    lines = [json.loads(line) for line in (home / "x.jsonl").read_text().splitlines()]
    entries = [json.loads(base64.b64decode(x["body"])) for x in lines if "body" in x]
    removed = [e["data"] for e in entries if e["kind"] == "credential.removed"]
    assert [(r["credential_id"], r["account"]) for r in removed] == [(credential, "alice")]


def test_an_unrestricted_credential_warns(home: Path, tmp_path: Path) -> None:
    run("accounts", "create", "alice", "--home", str(home))
    credential = tmp_path / "cred.json"
    credential.write_bytes(SAFE_CREDENTIAL.replace(b'"ipRestrict": true', b'"ipRestrict": false'))
    code, out = run(
        "venues", "add", "--account", "alice", "--credentials-file", str(credential), "--home", str(home)
    )
    assert code == 0
    assert "warning: it has no IP restriction" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ((b'"enableWithdrawals": false', b'"enableWithdrawals": true'), "can withdraw funds"),
        ((b'"enableInternalTransfer": false', b'"enableInternalTransfer": true'), "can transfer funds"),
        ((b', "permitsUniversalTransfer": false', b""), "can transfer funds"),  # silence fails closed
    ],
)
def test_dangerous_credentials_are_refused_and_not_stored(
    home: Path, change: tuple[bytes, bytes], message: str
) -> None:
    run("accounts", "create", "alice", "--home", str(home))
    code, out = run_stdin(
        SAFE_CREDENTIAL.replace(*change), "venues", "add", "--account", "alice", "--home", str(home)
    )
    assert code == 2
    assert message in out
    assert "trading permission only" in out
    assert json.loads(run("venues", "list", "--home", str(home), "--json")[1])["credentials"] == []
    assert "venue-secret" not in out


@pytest.mark.parametrize(
    ("data", "args", "message"),
    [
        (b"not json", (), "not valid"),
        (b'{"api_key": "k", "api_secret": "s", "extra": 1}', (), "not valid"),
        (b'{"api_key": "k"}', (), "not valid"),
        (SAFE_CREDENTIAL, ("--venue", "nasdaq"), "unknown venue"),
        (SAFE_CREDENTIAL, ("--account", "nobody"), "no account"),
    ],
)
def test_bad_credential_input_is_explained(
    home: Path, data: bytes, args: tuple[str, ...], message: str
) -> None:
    run("accounts", "create", "alice", "--home", str(home))
    account = () if "--account" in args else ("--account", "alice")
    code, out = run_stdin(data, "venues", "add", *account, *args, "--home", str(home))
    assert code == 2
    assert message in out
    assert "Traceback" not in out


def test_init_seals_the_master_key_under_a_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_MASTER_PASSPHRASE", "a long operator passphrase")
    home = tmp_path / "sealed"
    assert run("init", "--home", str(home))[0] == 0
    assert (home / "vault" / "master-1.key").read_bytes().startswith(b"BVKP1")
    assert run("accounts", "create", "alice", "--home", str(home))[0] == 0
    code, out = run("keys", "create", "--account", "alice", "--alg", "hmac", "--home", str(home), "--json")
    assert code == 0, out
    assert run("vault", "rotate-master", "--home", str(home))[0] == 0
    assert (home / "vault" / "master-2.key").read_bytes().startswith(b"BVKP1")
    monkeypatch.delenv("BASTION_MASTER_PASSPHRASE")
    code, out = run("keys", "list", "--home", str(home))
    assert code == 2
    assert "BASTION_MASTER_PASSPHRASE" in out


def test_key_labels_are_free_text_checked_for_injection(home: Path) -> None:
    assert run("accounts", "create", "labels", "--home", str(home))[0] == 0
    for label in ("x; rm -rf /", "<script>alert(1)</script>", "admin'--", "../../etc/passwd"):
        code, out = run(
            "keys", "create", "--account", "labels", "--generate", "--label", label, "--home", str(home)
        )
        assert code == 2 and "--label refused" in out
    code, out = run(
        "keys",
        "create",
        "--account",
        "labels",
        "--generate",
        "--label",
        "O'Brien's grid #3",
        "--home",
        str(home),
    )
    assert code == 0, out
