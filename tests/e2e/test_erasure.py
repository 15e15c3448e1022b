"""Acceptance (issue 7): personal data in ledger entries is sealed per subject; after
`bastion accounts erase`, the subject's data no longer opens and the ledger still verifies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Gateway, Key, cli, cli_json
from tests.e2e.test_ledger_cli import verify

pytestmark = pytest.mark.e2e


def test_erasure_shreds_the_subject_and_keeps_the_ledger_verifying(gateway: Gateway) -> None:
    cli(gateway.home, "accounts", "create", "erase-me")
    data = cli_json(gateway.home, "keys", "create", "--account", "erase-me", "--scopes", "read", "--generate")
    gateway.keys["erase-me"] = Key(data["key_id"], Path(data["private_key_path"]))
    response = gateway.call("erase-me", "GET", "/v1/account", source="127.0.0.77")
    assert response.status == 200
    request_id = response.headers["x-request-id"]

    stored = gateway.entry_for(request_id)
    assert stored["subject"] == "account:erase-me" and stored["client_ip"].startswith("pd1:")
    assert all(b"127.0.0.77" not in json.dumps(e).encode() for e in gateway.ledger_entries())  # never plain
    assert gateway.opened_entry_for(request_id)["client_ip"] == "127.0.0.77"

    refused = cli(gateway.home, "accounts", "erase", "erase-me", check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    result = cli_json(gateway.home, "accounts", "erase", "erase-me", "--yes")
    assert result["keys_revoked"] == [data["key_id"]]

    assert gateway.opened_entry_for(request_id)["client_ip"] == "[erased]"
    assert gateway.entry_for(request_id)["client_ip"] == stored["client_ip"]  # the bytes are untouched
    assert gateway.call("erase-me", "GET", "/v1/account").status == 401  # its keys are revoked
    entries = gateway.ledger_entries()
    assert any(e["kind"] == "subject.erased" and e["data"]["subject"] == "account:erase-me" for e in entries)
    code, report = verify(gateway.home)
    assert code == 0, report
    import sqlite3

    with sqlite3.connect(gateway.home / "bastion.db") as db:
        addresses = db.execute("SELECT last_used_ip FROM api_keys WHERE account = 'erase-me'").fetchall()
    assert addresses == [(None,)]
