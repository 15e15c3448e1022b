"""Acceptance (issue 5): the kill switch end to end, through the real server and its CLI."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Gateway, Key, cli, cli_json
from tests.e2e.test_orders import FAR_BELOW, cid, min_quantity, on_tick, ticker

pytestmark = pytest.mark.e2e


def new_account(gateway: Gateway, name: str, keys: int = 1) -> list[str]:
    cli(gateway.home, "accounts", "create", name)
    names = []
    for n in range(keys):
        data = cli_json(
            gateway.home, "keys", "create", "--account", name, "--scopes", "read,trade,cancel", "--generate"
        )
        who = f"{name}-{n}"
        gateway.keys[who] = Key(data["key_id"], Path(data["private_key_path"]))
        names.append(who)
    return names


def resting_buy(gateway: Gateway, who: str) -> dict[str, Any]:
    price = on_tick(ticker(gateway, "GOOG")["bid"] * FAR_BELOW, "0.01", up=False)
    body = {
        "client_order_id": cid("rest"),
        "symbol": "GOOG",
        "side": "buy",
        "type": "limit",
        "quantity": min_quantity(gateway, "GOOG", Decimal(price)),
        "price": price,
        "time_in_force": "gtc",
    }
    response = gateway.call(who, "POST", "/v1/orders", body)
    assert response.status == 201 and response.body["status"] == "new", response.body
    return dict(response.body)


def market(gateway: Gateway, who: str, side: str, quantity: str) -> Any:
    body = {
        "client_order_id": cid("mkt"),
        "symbol": "GOOG",
        "side": side,
        "type": "market",
        "quantity": quantity,
    }
    return gateway.call(who, "POST", "/v1/orders", body)


def killswitch(gateway: Gateway, *args: str) -> dict[str, Any]:
    return cli_json(gateway.home, "killswitch", *args)


def test_halt_with_cancel_open_cancels_everything_and_refuses_new_orders(gateway: Gateway) -> None:
    (who,) = new_account(gateway, "ks-halt")
    orders = [resting_buy(gateway, who) for _ in range(3)]

    report = killswitch(gateway, "on", "--account", "ks-halt", "--cancel-open")
    assert report["running_server"] is True and report["state"] == "halted" and report["previous"] == "active"
    assert sorted(report["canceled"]) == sorted(o["id"] for o in orders)
    for placed in orders:  # canceled at the venue, not only in Bastion's books
        assert gateway.call(who, "GET", f"/v1/orders/{placed['id']}").body["status"] == "canceled"
    venue_open = gateway.call(who, "GET", "/v1/orders", query="status=open").body["orders"]
    assert venue_open == []

    refused = market(gateway, who, "buy", "1")
    assert refused.status == 422
    assert (
        refused.body["error"]["code"] == "RISK_REJECTED"
        and refused.body["error"]["reason"] == "TRADING_HALTED"
    )
    entry = gateway.entry_for(refused.body["error"]["request_id"])
    assert (entry["stage"], entry["code"]) == ("risk", "RISK_REJECTED")

    changes = [e["data"] for e in gateway.ledger_entries() if e["kind"] == "killswitch.changed"]
    assert changes[-1]["subject"] == "ks-halt" and changes[-1]["state"] == "halted"
    assert changes[-1]["cancel_open"] is True and "cli" in changes[-1]["actor"]

    off = killswitch(gateway, "off", "--account", "ks-halt")
    assert (off["previous"], off["state"]) == ("halted", "active")
    assert market(gateway, who, "buy", "1").status == 201
    last = [e["data"] for e in gateway.ledger_entries() if e["kind"] == "killswitch.changed"][-1]
    assert (last["state"], last["previous"]) == ("active", "halted")  # turning it off is recorded too


def test_cancels_still_work_while_halted(gateway: Gateway) -> None:
    (who,) = new_account(gateway, "ks-cancel")
    placed = resting_buy(gateway, who)
    killswitch(gateway, "on", "--account", "ks-cancel")
    try:
        canceled = gateway.call(who, "DELETE", f"/v1/orders/{placed['id']}")
        assert canceled.status == 200 and canceled.body["status"] == "canceled"
        assert market(gateway, who, "sell", "1").status == 422
    finally:
        killswitch(gateway, "off", "--account", "ks-cancel")


def test_reducing_lets_only_reducing_orders_through(gateway: Gateway) -> None:
    (who,) = new_account(gateway, "ks-reduce")
    bought = market(gateway, who, "buy", "2")
    assert bought.status == 201 and bought.body["status"] == "filled", bought.body
    killswitch(gateway, "on", "--account", "ks-reduce", "--reduce-only")
    try:
        for side, quantity in (("buy", "1"), ("sell", "3")):  # grows it, or flips it short
            refused = market(gateway, who, side, quantity)
            assert refused.status == 422 and refused.body["error"]["reason"] == "REDUCE_ONLY"
        reduced = market(gateway, who, "sell", "1")
        assert reduced.status == 201 and reduced.body["status"] == "filled"
        assert market(gateway, who, "sell", "1").status == 201  # back to flat
        assert market(gateway, who, "sell", "1").body["error"]["reason"] == "REDUCE_ONLY"
    finally:
        killswitch(gateway, "off", "--account", "ks-reduce")


def test_a_key_level_halt_leaves_the_other_keys_alone(gateway: Gateway) -> None:
    first, second = new_account(gateway, "ks-key", keys=2)
    killswitch(gateway, "on", "--key", gateway.keys[first].key_id)
    try:
        assert market(gateway, first, "buy", "1").body["error"]["reason"] == "TRADING_HALTED"
        assert market(gateway, second, "buy", "1").status == 201
        status = cli_json(gateway.home, "killswitch", "status")
        assert {"level": "key", "subject": gateway.keys[first].key_id, "state": "halted"} in status["states"]
    finally:
        killswitch(gateway, "off", "--key", gateway.keys[first].key_id)
    assert market(gateway, first, "buy", "1").status == 201


def test_killswitch_needs_exactly_one_target_and_a_real_one(gateway: Gateway) -> None:
    assert cli(gateway.home, "killswitch", "on", check=False).returncode == 2
    both = cli(gateway.home, "killswitch", "on", "--global", "--account", "alice", check=False)
    assert both.returncode == 2
    missing = cli(gateway.home, "killswitch", "on", "--account", "nobody", check=False)
    assert missing.returncode == 2 and "no account" in missing.stderr


def test_the_halt_is_seen_by_the_very_next_request(gateway: Gateway) -> None:
    (who,) = new_account(gateway, "ks-next")
    started = time.monotonic()
    killswitch(gateway, "on", "--account", "ks-next")
    try:
        assert market(gateway, who, "buy", "1").body["error"]["reason"] == "TRADING_HALTED"
    finally:
        killswitch(gateway, "off", "--account", "ks-next")
    assert time.monotonic() - started < 30
