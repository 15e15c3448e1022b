"""Acceptance (issue 5): trading states and the risk book survive a restart; the kill switch
works with no server running (the CLI then does the work itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Key, _configure, cli, cli_json, free_port, serve, stop
from tests.e2e.test_killswitch import market, resting_buy
from tests.e2e.test_orders import cid

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, dict[str, Key]]:
    home = tmp_path_factory.mktemp("restart")
    cli(home, "init")
    port = free_port()
    _configure(home, port)
    cli(home, "accounts", "create", "rs")
    data = cli_json(home, "keys", "create", "--account", "rs", "--scopes", "read,trade,cancel", "--generate")
    key = Key(data["key_id"], Path(data["private_key_path"]))
    return home, port, {"rs": key, "alice": key}  # the order helpers read prices as "alice"


def test_states_and_positions_survive_a_restart(home: tuple[Path, int, dict[str, Key]]) -> None:
    path, port, keys = home
    gateway = serve(path, port, keys)
    try:
        resting = [resting_buy(gateway, "rs") for _ in range(2)]
        assert market(gateway, "rs", "buy", "2").body["status"] == "filled"
        cli_json(path, "killswitch", "on", "--account", "rs", "--reduce-only")
    finally:
        stop(gateway)

    # no server: the CLI does it itself, cancelling at the venue
    status = cli_json(path, "killswitch", "status")
    assert status["states"] == [{"level": "account", "subject": "rs", "state": "reducing"}]
    report = cli_json(path, "killswitch", "on", "--global", "--cancel-open")
    assert report["running_server"] is False
    assert sorted(report["canceled"]) == sorted(o["id"] for o in resting)

    gateway = serve(path, port, keys)
    try:
        assert market(gateway, "rs", "sell", "1").body["error"]["reason"] == "TRADING_HALTED"
        for placed in resting:
            assert gateway.call("rs", "GET", f"/v1/orders/{placed['id']}").body["status"] == "canceled"
        cli_json(path, "killswitch", "off", "--global")
        # still REDUCING for the account, and the book knows the position of 2 from before the restart
        assert market(gateway, "rs", "buy", "1").body["error"]["reason"] == "REDUCE_ONLY"
        assert market(gateway, "rs", "sell", "3").body["error"]["reason"] == "REDUCE_ONLY"
        assert market(gateway, "rs", "sell", "2").status == 201
    finally:
        stop(gateway)
    assert cli_json(path, "ledger", "verify")["ok"] is True


def test_self_match_prevention_sees_orders_resting_from_before_a_restart(tmp_path: Path) -> None:
    """The fraud stage's view of what rests is rebuilt from the stored orders: a restart must
    not open a window for one owner's accounts to trade with each other."""
    cli(tmp_path, "init")
    port = free_port()
    _configure(tmp_path, port)
    keys: dict[str, Key] = {}
    for account in ("sm-a", "sm-b"):
        cli(tmp_path, "accounts", "create", account, "--owner", "sm-fund")
        data = cli_json(
            tmp_path, "keys", "create", "--account", account, "--scopes", "read,trade,cancel", "--generate"
        )
        keys[account] = Key(data["key_id"], Path(data["private_key_path"]))
    keys["alice"] = keys["sm-b"]  # the order helpers read prices as "alice"
    gateway = serve(tmp_path, port, keys)
    try:
        resting = resting_buy(gateway, "sm-a")  # far below the market: it rests
    finally:
        stop(gateway)

    gateway = serve(tmp_path, port, keys)
    try:
        price = resting["price"]
        cross = {
            "client_order_id": cid("sm"),
            "symbol": "GOOG",
            "side": "sell",
            "type": "limit",
            "quantity": resting["quantity"],
            "price": price,  # at the resting buy's price: it would trade against it
            "time_in_force": "gtc",
        }
        refused = gateway.call("sm-b", "POST", "/v1/orders", cross)
        assert refused.status == 422, refused.body
        assert refused.body["error"]["reason"] == "SELF_MATCH_PREVENTED"
        # Once the resting order is cancelled there is nothing to match: the same order goes on.
        assert gateway.call("sm-a", "DELETE", f"/v1/orders/{resting['id']}").status == 200
        placed = gateway.call("sm-b", "POST", "/v1/orders", cross | {"client_order_id": cid("sm")})
        assert placed.status == 201, placed.body
    finally:
        stop(gateway)
