"""OWASP API Security Top 10 (2023), API6: unrestricted access to sensitive business flows.

A trading gateway's sensitive flow is trading itself: an order loop, a cancel/replace storm, a
wash trade between one owner's accounts, a fat-finger price, a stolen key pumping a thin coin,
a runaway bot.  Each attack runs against a real server on loopback with the fraud stage's
actions as shipped (``_configure(..., quiet_fraud=False)``) and account policies set with
``bastion policy set ACCOUNT --file F``; each asserts the precise refusal (status, code,
reason), its ledger entry (``outcome.fraud`` for the fraud stage's) and that nothing traded.

Every attack uses an account and key of its own: the fraud stage's probing rule counts each
key's refusals (``fraud.probe_denials`` in 10 minutes: an alert and a deny), and its loop rules
remember each key's orders, so attacks must not feed one another.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.cli import app as cli_app
from bastion.errors import MESSAGES, BastionError, ErrorCode
from tests.e2e.conftest import Gateway, Key, Response, _configure, free_port, serve, stop
from tests.e2e.test_orders import cid, on_tick, plain

pytestmark = pytest.mark.e2e

HOME_ADDRESS = "127.0.0.1"
THIEF_ADDRESS = "127.0.9.66"  # another /24: a network the victim's key never used
FAR_BELOW = Decimal("0.001")  # resting buys at a thousandth of the bid never fill in these tests
WARMUP_ORDERS = 20  # fraud.burst_warmup_orders: the burst rules judge a key only after these
LADDER = 12  # the grid key's usual burst: a ladder of 12 orders (docs/fraud.md's example)
WINDOW = 10.0  # fraud.burst_window_seconds

ACCOUNTS: dict[str, dict[str, Any] | None] = {
    # account -> its policy document (None: no policy)
    "watcher": None,
    "rate": {"orders_per_second": "1"},
    "open": {"max_open_orders": 3},
    "notional": {"max_daily_notional": "2500"},
    "storm": None,  # its policy is set while the server runs, between the orders and the storm
    "wash-a": None,
    "wash-b": None,
    "selftrade": None,
    "finger": None,
    "victim": None,
    "loop": None,
    "grid": None,
}
OWNERS = {"wash-a": "washer", "wash-b": "washer"}


def bastion(home: Path, *args: str) -> tuple[int, str, str]:
    """``bastion ARGS --home HOME`` in this process: the same commands and exit codes (a
    BastionError exits 2, as ``bastion.cli.main`` makes it) without a 1.7 s interpreter start."""
    result = CliRunner().invoke(cli_app, [*args, "--home", str(home)])
    code = 2 if isinstance(result.exception, BastionError) else result.exit_code
    return code, result.stdout, result.stderr


def bastion_json(home: Path, *args: str) -> dict[str, Any]:
    code, out, err = bastion(home, *args, "--json")
    assert code == 0, f"bastion {' '.join(args)}: exit {code}: {out}{err}"
    data: dict[str, Any] = json.loads(out)
    return data


@dataclass
class Flows:
    gateway: Gateway
    first_ladder_at: float  # when the grid key's first ladder was complete


def _market_buy(gateway: Gateway, who: str, symbol: str = "GOOG", quantity: str = "1") -> Response:
    order = {"client_order_id": cid(who), "symbol": symbol, "side": "buy", "type": "market"}
    return gateway.call(who, "POST", "/v1/orders", order | {"quantity": quantity})


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flows]:
    home = tmp_path_factory.mktemp("api6-home")
    bastion_json(home, "init")
    port = free_port()
    _configure(home, port, quiet_fraud=False)
    keys: dict[str, Key] = {}
    for account, policy in ACCOUNTS.items():
        owner = ("--owner", OWNERS[account]) if account in OWNERS else ()
        bastion_json(home, "accounts", "create", account, *owner)
        made = bastion_json(
            home, "keys", "create", "--account", account, "--scopes", "read,trade,cancel", "--generate"
        )
        keys[account] = Key(made["key_id"], Path(made["private_key_path"]))
        if policy is not None:
            document = home / f"{account}.json"
            document.write_text(json.dumps(policy))
            bastion_json(home, "policy", "set", account, "--file", str(document))
    gateway = serve(home, port, keys)
    try:
        # The grid key's first ladder; its second comes a window later (in the last test).
        for step in range(LADDER):
            _placed(gateway, gateway.call("grid", "POST", "/v1/orders", _rung(step)))
        yield Flows(gateway, time.monotonic())
    finally:
        stop(gateway)


# -- helpers ----------------------------------------------------------------------------------
def _markets(gateway: Gateway) -> dict[str, dict[str, Any]]:
    body = gateway.call("watcher", "GET", "/v1/markets").body
    return {m["symbol"]: m for m in body["markets"]}


def _ticker(gateway: Gateway, symbol: str) -> dict[str, Decimal]:
    body = gateway.call("watcher", "GET", f"/v1/markets/{symbol}/ticker").body
    return {k: Decimal(body[k]) for k in ("bid", "ask", "last")}


_steps = itertools.count()


def _passive_buy(gateway: Gateway, symbol: str, notional: str) -> dict[str, Any]:
    """A limit buy far below the market (it rests and never fills here) worth about ``notional``,
    each at its own price: the same order three times in 10 s is a loop (``repeated_order``)."""
    market = _markets(gateway)[symbol]
    tick = Decimal(market["tick_size"])
    base = Decimal(on_tick(_ticker(gateway, symbol)["bid"] * FAR_BELOW, market["tick_size"], up=False))
    price = base + next(_steps) * tick
    lot = Decimal(market["lot_size"])
    quantity = max(lot, (Decimal(notional) / price / lot).to_integral_value(ROUND_DOWN) * lot)
    return {
        "client_order_id": cid("p"),
        "symbol": symbol,
        "side": "buy",
        "type": "limit",
        "quantity": plain(quantity),
        "price": plain(price),
        "time_in_force": "gtc",
    }


def _rung(step: int, base: Decimal = Decimal("1.00")) -> dict[str, Any]:
    """One rung of a ladder: a GOOG limit buy of 1 at ``base`` + step cents (below the market)."""
    return _limit("GOOG", "buy", plain(base + Decimal(step) / 100))


def _limit(symbol: str, side: str, price: str, quantity: str = "1") -> dict[str, Any]:
    return {
        "client_order_id": cid(side),
        "symbol": symbol,
        "side": side,
        "type": "limit",
        "quantity": quantity,
        "price": price,
        "time_in_force": "gtc",
    }


@dataclass(frozen=True)
class Holdings:
    balances: dict[str, tuple[str, str]]
    orders: dict[str, tuple[str, str, str]]  # client_order_id -> (status, filled, quantity)


def _holdings(gateway: Gateway, who: str) -> Holdings:
    account = gateway.call(who, "GET", "/v1/account").body
    orders = gateway.call(who, "GET", "/v1/orders", query="status=all&limit=500").body["orders"]
    return Holdings(
        {b["asset"]: (b["free"], b["locked"]) for b in account["balances"]},
        {o["client_order_id"]: (o["status"], o["filled_quantity"], o["quantity"]) for o in orders},
    )


def _refused(response: Response, status: int, code: str, reason: str | None = None) -> dict[str, Any]:
    assert response.status == status, (response.status, response.body)
    assert set(response.body) == {"error"}, response.body
    error: dict[str, Any] = response.body["error"]
    assert error["code"] == code, error
    assert error["message"] == MESSAGES[ErrorCode(code)], error
    assert set(error) <= {"code", "message", "request_id", "reason"}, error
    assert response.headers.get("x-request-id") == error["request_id"]
    if reason is not None:
        assert error.get("reason") == reason, error
    return error


def _entry(gateway: Gateway, response: Response) -> dict[str, Any]:
    return gateway.entry_for(response.body["error"]["request_id"])


def _placed(gateway: Gateway, response: Response) -> dict[str, Any]:
    """The answer of an order that must have been placed (else why, from its ledger entry)."""
    if response.status != 201:
        raise AssertionError((response.status, response.body, _entry(gateway, response).get("outcome")))
    body: dict[str, Any] = response.body
    return body


def _fraud_rules(entry: dict[str, Any]) -> set[str]:
    return {r["rule"] for r in entry["outcome"]["fraud"].get("rules", [])}


# -- order loops a policy stops ---------------------------------------------------------------
def test_api6_order_loop_is_stopped_by_orders_per_second(flows: Flows) -> None:
    gateway = flows.gateway
    placed: list[str] = []
    refused: Response | None = None
    order: dict[str, Any] = {}
    for _ in range(10):  # a bot in a loop, as fast as it can
        order = {"client_order_id": cid("rate"), "symbol": "GOOG", "side": "buy", "type": "market"}
        response = gateway.call("rate", "POST", "/v1/orders", order | {"quantity": "1"})
        if response.status != 201:
            refused = response
            break
        placed.append(order["client_order_id"])
    assert refused is not None, "ten orders in a row passed a limit of one per second"
    _refused(refused, 422, "RISK_REJECTED", "ORDER_RATE")
    assert len(placed) == 1  # the bucket's burst is max(1, rate)
    entry = _entry(gateway, refused)
    assert entry["verdict"] == "deny" and entry["stage"] == "risk" and entry["code"] == "RISK_REJECTED"
    assert "per second" in entry["reason"]
    after = _holdings(gateway, "rate")
    assert set(after.orders) == set(placed)  # the refused order does not exist


def test_api6_order_loop_is_stopped_by_max_open_orders(flows: Flows) -> None:
    gateway = flows.gateway
    for _ in range(3):
        placed = gateway.call("open", "POST", "/v1/orders", _passive_buy(gateway, "BTC-USD", "20"))
        assert _placed(gateway, placed)["status"] == "new"
    before = _holdings(gateway, "open")
    fourth = gateway.call("open", "POST", "/v1/orders", _passive_buy(gateway, "BTC-USD", "20"))
    _refused(fourth, 422, "RISK_REJECTED", "MAX_OPEN_ORDERS")
    entry = _entry(gateway, fourth)
    assert entry["stage"] == "risk" and "3 open, limit 3" in entry["reason"]
    assert _holdings(gateway, "open") == before  # no order, nothing more locked


def test_api6_order_loop_is_stopped_by_max_daily_notional(flows: Flows) -> None:
    gateway = flows.gateway
    for _ in range(2):  # 1,000 each, against a daily limit of 2,500
        placed = gateway.call("notional", "POST", "/v1/orders", _passive_buy(gateway, "BTC-USD", "1000"))
        _placed(gateway, placed)
    before = _holdings(gateway, "notional")
    third = gateway.call("notional", "POST", "/v1/orders", _passive_buy(gateway, "BTC-USD", "1000"))
    _refused(third, 422, "RISK_REJECTED", "MAX_DAILY_NOTIONAL")
    entry = _entry(gateway, third)
    assert entry["stage"] == "risk" and "> 2500" in entry["reason"]
    assert _holdings(gateway, "notional") == before


# -- cancel/replace storms --------------------------------------------------------------------
def test_api6_cancel_replace_storm_is_stopped_by_cancel_and_order_rates(flows: Flows) -> None:
    gateway = flows.gateway
    resting = []
    for _ in range(2):
        placed = gateway.call("storm", "POST", "/v1/orders", _passive_buy(gateway, "BTC-USD", "20"))
        _placed(gateway, placed)
        resting.append(placed.body["id"])
    # The operator limits the account while the server runs: in force for the next request.
    document = gateway.home / "storm.json"
    document.write_text(json.dumps({"cancels_per_second": "1", "orders_per_second": "1"}))
    assert bastion_json(gateway.home, "policy", "set", "storm", "--file", str(document))[
        "running_server_updated"
    ]
    # The storm: cancel, replace, cancel, replace ... as fast as the bot can.
    canceled = gateway.call("storm", "DELETE", f"/v1/orders/{resting[0]}")
    assert canceled.status == 200 and canceled.body["status"] == "canceled", canceled.body
    replaced = gateway.call("storm", "POST", "/v1/orders", _passive_buy(gateway, "BTC-USD", "20"))
    _placed(gateway, replaced)
    before = _holdings(gateway, "storm")
    second_cancel = gateway.call("storm", "DELETE", f"/v1/orders/{resting[1]}")
    _refused(second_cancel, 422, "RISK_REJECTED", "CANCEL_RATE")
    second_replace = gateway.call("storm", "POST", "/v1/orders", _passive_buy(gateway, "BTC-USD", "20"))
    _refused(second_replace, 422, "RISK_REJECTED", "ORDER_RATE")
    for response in (second_cancel, second_replace):
        entry = _entry(gateway, response)
        assert entry["verdict"] == "deny" and entry["stage"] == "risk", entry
        assert "per second" in entry["reason"]
    assert _entry(gateway, second_cancel)["route"] == "cancel_order"
    after = _holdings(gateway, "storm")
    assert after == before  # the order the storm tried to cancel still rests; no new order
    still = gateway.call("storm", "GET", f"/v1/orders/{resting[1]}")
    assert still.status == 200 and still.body["status"] == "new"


# -- wash trades ------------------------------------------------------------------------------
def _resting_sell(gateway: Gateway, who: str) -> tuple[dict[str, Any], str]:
    """A GOOG limit sell 15 % above the ask: it rests (out of a few daily bars' reach)."""
    price = on_tick(_ticker(gateway, "GOOG")["ask"] * Decimal("1.15"), "0.01", up=True)
    order = _limit("GOOG", "sell", price)
    placed = gateway.call(who, "POST", "/v1/orders", order)
    assert _placed(gateway, placed)["status"] == "new"
    return placed.body, price


def test_api6_wash_trade_between_one_owners_accounts_is_refused(flows: Flows) -> None:
    gateway = flows.gateway
    resting, price = _resting_sell(gateway, "wash-a")
    before_a, before_b = _holdings(gateway, "wash-a"), _holdings(gateway, "wash-b")
    cross = gateway.call("wash-b", "POST", "/v1/orders", _limit("GOOG", "buy", price))
    _refused(cross, 422, "RISK_REJECTED", "SELF_MATCH_PREVENTED")
    assert "wash-a" not in cross.raw.decode()  # the caller learns nothing of the other account
    entry = _entry(gateway, cross)
    assert entry["verdict"] == "deny" and entry["stage"] == "fraud"
    assert "self_match" in _fraud_rules(entry)
    assert (_holdings(gateway, "wash-a"), _holdings(gateway, "wash-b")) == (before_a, before_b)
    assert before_b.orders == {}
    again = gateway.call("wash-a", "GET", f"/v1/orders/{resting['id']}").body
    assert (again["status"], again["filled_quantity"]) == ("new", "0")


def test_api6_self_trade_within_one_account_is_refused(flows: Flows) -> None:
    gateway = flows.gateway
    resting, price = _resting_sell(gateway, "selftrade")
    before = _holdings(gateway, "selftrade")
    cross = gateway.call("selftrade", "POST", "/v1/orders", _limit("GOOG", "buy", price))
    _refused(cross, 422, "RISK_REJECTED", "SELF_MATCH_PREVENTED")
    entry = _entry(gateway, cross)
    assert entry["stage"] == "fraud" and "self_match" in _fraud_rules(entry)
    assert _holdings(gateway, "selftrade") == before
    assert set(before.orders) == {resting["client_order_id"]}


# -- fraud: fat fingers and stolen keys -------------------------------------------------------
def test_api6_fat_finger_price_far_from_the_reference_is_held(flows: Flows) -> None:
    gateway = flows.gateway
    assert gateway.call("finger", "GET", "/v1/account", source=HOME_ADDRESS).status == 200
    before = _holdings(gateway, "finger")
    price = on_tick(_ticker(gateway, "GOOG")["last"] * Decimal("1.3"), "0.01", up=True)
    order = _limit("GOOG", "buy", price)
    held = gateway.call("finger", "POST", "/v1/orders", order, source=HOME_ADDRESS)
    error = _refused(held, 403, "STEP_UP_REQUIRED")
    hold_id = error["reason"]
    assert hold_id.startswith("hold_")
    entry = _entry(gateway, held)
    assert entry["verdict"] == "hold" and entry["stage"] == "fraud" and entry["hold_id"] == hold_id
    assert entry["outcome"]["fraud"]["action"] == "hold"
    assert "price_deviation" in _fraud_rules(entry)
    pending = {h["id"]: h for h in bastion_json(gateway.home, "fraud", "holds")["holds"]}
    assert pending[hold_id]["status"] == "pending"
    assert pending[hold_id]["client_order_id"] == order["client_order_id"]
    retry = gateway.call("finger", "POST", "/v1/orders", order, source=HOME_ADDRESS)
    assert _refused(retry, 403, "STEP_UP_REQUIRED")["reason"] == hold_id  # no way round the hold
    assert _holdings(gateway, "finger") == before  # nothing placed, nothing locked


def test_api6_stolen_key_from_a_new_network_pumping_a_thin_coin_is_refused(flows: Flows) -> None:
    gateway = flows.gateway
    assert gateway.call("victim", "GET", "/v1/account", source=HOME_ADDRESS).status == 200
    before = _holdings(gateway, "victim")
    market = _markets(gateway)["MEME-USD"]
    last = _ticker(gateway, "MEME-USD")["last"]
    price = Decimal(on_tick(last * Decimal("1.5"), market["tick_size"], up=True))
    lot, floor = Decimal(market["lot_size"]), Decimal(market["min_notional"])
    quantity = max(lot, (2 * floor / price / lot).to_integral_value("ROUND_UP") * lot)
    pump = _limit("MEME-USD", "buy", plain(price), plain(quantity))
    refused = gateway.call("victim", "POST", "/v1/orders", pump, source=THIEF_ADDRESS)
    _refused(refused, 403, "SUSPICIOUS_ACTIVITY")
    assert "new_network" not in refused.raw.decode()  # the thief learns no rule
    entry = _entry(gateway, refused)
    assert entry["verdict"] == "deny" and entry["stage"] == "fraud"
    fraud = entry["outcome"]["fraud"]
    assert {"new_network", "illiquid_symbol", "price_deviation"} <= _fraud_rules(entry)
    assert fraud["action"] in ("deny", "halt") and fraud["score"] >= 1.5
    assert _holdings(gateway, "victim") == before  # no order, no USD moved


# -- runaway loops ----------------------------------------------------------------------------
def test_api6_runaway_loop_on_a_key_with_a_baseline_is_held(flows: Flows) -> None:
    """A bot with a history (WARMUP_ORDERS orders, each different) gets stuck in a loop sending
    one market order again and again: the third time within 10 s it is held for an operator."""
    gateway = flows.gateway
    # Its history: orders of about the size the loop sends (a GOOG buy of 1, passive).
    base = Decimal(on_tick(_ticker(gateway, "GOOG")["bid"] * Decimal("0.8"), "0.01", up=False))
    for step in range(WARMUP_ORDERS):
        _placed(gateway, gateway.call("loop", "POST", "/v1/orders", _rung(step, base)))
    placed = []
    stopped: Response | None = None
    for _ in range(10):
        response = _market_buy(gateway, "loop")
        if response.status != 201:
            stopped = response
            break
        placed.append(response.body["client_order_id"])
    assert stopped is not None, "ten identical orders in a row went through"
    # at the third identical order at the latest (its history came in one burst here, so the
    # burst rule may hold the loop even sooner)
    assert len(placed) <= 2, (placed, stopped.body, _entry(gateway, stopped).get("outcome"))
    error = _refused(stopped, 403, "STEP_UP_REQUIRED")
    entry = _entry(gateway, stopped)
    assert entry["verdict"] == "hold" and entry["stage"] == "fraud" and entry["hold_id"] == error["reason"]
    assert entry["outcome"]["fraud"]["action"] == "hold"
    assert {"repeated_order", "burst_rate"} & set(_fraud_rules(entry))
    before = _holdings(gateway, "loop")
    assert len(before.orders) == WARMUP_ORDERS + len(placed)  # the held order does not exist
    again = _market_buy(gateway, "loop")
    _refused(again, 403, "STEP_UP_REQUIRED")  # the loop cannot wait its way in: held orders count
    assert _holdings(gateway, "loop") == before


def test_api6_runaway_ladder_far_beyond_the_keys_usual_burst_is_stopped(flows: Flows) -> None:
    """The grid key sends ladders of LADDER orders, a window apart (its usual peak is 12); then a
    runaway ladder of 48 in a few seconds: by 36 in the window it must be stopped."""
    gateway = flows.gateway
    time.sleep(max(0.0, flows.first_ladder_at + WINDOW + 0.5 - time.monotonic()))
    for step in range(LADDER, 2 * LADDER):
        _placed(gateway, gateway.call("grid", "POST", "/v1/orders", _rung(step)))
    stopped: Response | None = None
    sent = 0
    for step in range(2 * LADDER, 2 * LADDER + 48):
        response = gateway.call("grid", "POST", "/v1/orders", _rung(step))
        sent += 1
        if response.status != 201:
            stopped = response
            break
    assert stopped is not None, f"a ladder of {sent} more orders (usually {LADDER}) went through"
    assert stopped.status == 403, stopped.body
    assert sent <= 3 * LADDER - LADDER + 1  # 36 in the window, with the second ladder's 12
    assert {"burst_rate", "burst_notional"} & _fraud_rules(_entry(gateway, stopped))
