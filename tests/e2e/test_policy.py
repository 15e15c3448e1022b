"""Acceptance (issue 5): policies set through the CLI take effect on the running server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Gateway, Key, cli, cli_json
from tests.e2e.test_orders import cid

pytestmark = pytest.mark.e2e


def order(gateway: Gateway, who: str, quantity: str, side: str = "buy") -> Any:
    body = {
        "client_order_id": cid("pol"),
        "symbol": "GOOG",
        "side": side,
        "type": "market",
        "quantity": quantity,
    }
    return gateway.call(who, "POST", "/v1/orders", body)


def test_limits_from_keys_create_and_policy_set(gateway: Gateway, tmp_path: Path) -> None:
    cli(gateway.home, "accounts", "create", "pol")
    data = cli_json(
        gateway.home,
        "keys",
        "create",
        "--account",
        "pol",
        "--scopes",
        "read,trade,cancel",
        "--generate",
        "--max-order-quantity",
        "2",
        "--symbols",
        "GOOG",
    )
    key_id = data["key_id"]
    gateway.keys["pol"] = Key(key_id, Path(data["private_key_path"]))

    assert order(gateway, "pol", "2").status == 201
    refused = order(gateway, "pol", "3")
    assert refused.status == 422 and refused.body["error"] == {
        "code": "RISK_REJECTED",
        "message": "The order was refused by a risk limit or the trading state.",
        "request_id": refused.body["error"]["request_id"],
        "reason": "MAX_ORDER_QUANTITY",
    }
    other = {
        "client_order_id": cid("pol"),
        "symbol": "EUR-USD",
        "side": "buy",
        "type": "market",
        "quantity": "10",
    }
    assert gateway.call("pol", "POST", "/v1/orders", other).body["error"]["reason"] == "SYMBOL_NOT_ALLOWED"

    shown = cli_json(gateway.home, "policy", "show", key_id)
    assert shown["version"] == 1 and shown["document"] == {"max_order_quantity": "2", "symbols": ["GOOG"]}

    patch = tmp_path / "raise.yaml"
    patch.write_text('max_order_quantity: "5"\nmax_open_orders: 3\n')
    result = cli_json(gateway.home, "policy", "set", key_id, "--file", str(patch))
    assert result["version"] == 2 and result["running_server_updated"] is True
    assert result["document"] == {"max_order_quantity": "5", "max_open_orders": 3, "symbols": ["GOOG"]}
    assert order(gateway, "pol", "3").status == 201  # the running server applied it at once

    # an invalid document is refused whole: the message names the field, nothing changes
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"max_order_quantity": "9", "max_daily_loss": 100}))
    failed = cli(gateway.home, "policy", "set", key_id, "--file", str(bad), check=False)
    assert failed.returncode == 2 and "max_daily_loss" in failed.stderr
    shown = cli_json(gateway.home, "policy", "show", key_id)
    assert shown["version"] == 2 and [h["version"] for h in shown["history"]] == [1, 2]
    assert all("cli" in h["actor"] for h in shown["history"])
    assert order(gateway, "pol", "6").body["error"]["reason"] == "MAX_ORDER_QUANTITY"

    changes = [e["data"] for e in gateway.ledger_entries() if e["kind"] == "policy.changed"]
    mine = [c for c in changes if c["subject"] == f"key:{key_id}"]
    assert [c["version"] for c in mine] == [1, 2] and all("cli" in c["actor"] for c in mine)
    assert mine[-1]["document"]["max_order_quantity"] == "5" and len(mine[-1]["document_sha256"]) == 64


def test_account_defaults_and_scope_ceiling(gateway: Gateway, tmp_path: Path) -> None:
    cli(gateway.home, "accounts", "create", "pol-acct")
    data = cli_json(
        gateway.home, "keys", "create", "--account", "pol-acct", "--scopes", "read,trade", "--generate"
    )
    gateway.keys["pol-acct"] = Key(data["key_id"], Path(data["private_key_path"]))
    defaults = tmp_path / "account.json"
    defaults.write_text(json.dumps({"max_order_quantity": "1"}))
    cli_json(gateway.home, "policy", "set", "pol-acct", "--file", str(defaults))
    assert order(gateway, "pol-acct", "2").body["error"]["reason"] == "MAX_ORDER_QUANTITY"

    ceiling = tmp_path / "ceiling.json"
    ceiling.write_text(json.dumps({"scopes": ["read"]}))
    cli_json(gateway.home, "policy", "set", "pol-acct", "--file", str(ceiling))
    forbidden = order(gateway, "pol-acct", "1")
    assert forbidden.status == 403 and forbidden.body["error"]["code"] == "FORBIDDEN"
    assert gateway.call("pol-acct", "GET", "/v1/account").status == 200
    shown = cli_json(gateway.home, "policy", "show", data["key_id"])
    assert shown["scopes"] == ["read", "trade"] and shown["effective_scopes"] == ["read"]


def test_withdraw_can_never_be_granted(gateway: Gateway, tmp_path: Path) -> None:
    doc = tmp_path / "withdraw.json"
    doc.write_text(json.dumps({"scopes": ["read", "withdraw"]}))
    failed = cli(gateway.home, "policy", "set", gateway.keys["alice"].key_id, "--file", str(doc), check=False)
    assert failed.returncode == 2 and "`scopes`" in failed.stderr and "withdraw" in failed.stderr
    unknown = cli(gateway.home, "policy", "show", "bst_nothing", check=False)
    assert unknown.returncode == 2


def test_simultaneous_orders_at_a_limit_through_the_server(gateway: Gateway, tmp_path: Path) -> None:
    """Twenty bots' worth of orders at once against max_open_orders 5: exactly five rest."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.e2e.test_killswitch import new_account, resting_buy

    (who,) = new_account(gateway, "pol-burst")
    limit = tmp_path / "burst.json"
    limit.write_text(json.dumps({"max_open_orders": 5}))
    cli_json(gateway.home, "policy", "set", gateway.keys[who].key_id, "--file", str(limit))

    def attempt(_: int) -> int:
        try:
            resting_buy(gateway, who)
        except AssertionError:
            return 0
        return 1

    with ThreadPoolExecutor(max_workers=20) as pool:
        placed = sum(pool.map(attempt, range(20)))
    assert placed == 5
    refusals = [
        e["data"]
        for e in gateway.ledger_entries()
        if e["kind"] == "request"
        and e["data"].get("key_id") == gateway.keys[who].key_id
        and e["data"].get("stage") == "risk"
    ]
    assert len(refusals) == 15 and all("open" in r["reason"] for r in refusals)
    open_now = gateway.call(who, "GET", "/v1/orders", query="status=open").body["orders"]
    assert len(open_now) == 5
