"""Acceptance: orders on all three instruments through a real server over TLS."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

import pytest

from bastion.venues.paper.data import Bar
from bastion.venues.paper.engine import PaperEngine
from bastion.venues.paper.venue import DEFAULT_EPOCH_US, build_markets
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e
_ids = itertools.count()
SYMBOLS = ("BTC-USD", "EUR-USD", "GOOG")
# Resting buys at a thousandth of the bid (at least a tick): over 15 bars no replayed series
# falls below 0.6 % of a close, and these tests rest for a bar or two.
FAR_BELOW = Decimal("0.001")


def cid(prefix: str) -> str:
    return f"{prefix}-{int(time.time() * 1000) % 10**9}-{next(_ids)}"


def market(gateway: Gateway, symbol: str) -> dict[str, Any]:
    markets = {m["symbol"]: m for m in gateway.call("alice", "GET", "/v1/markets").body["markets"]}
    return markets[symbol]


def ticker(gateway: Gateway, symbol: str) -> dict[str, Decimal]:
    body = gateway.call("alice", "GET", f"/v1/markets/{symbol}/ticker").body
    return {k: Decimal(body[k]) for k in ("bid", "ask", "last")}


def plain(value: Decimal) -> str:
    """Decimal arithmetic can land in exponent form (2.00E+2); the API takes plain digits."""
    return format(value, "f")


def on_tick(price: Decimal, tick: str, up: bool) -> str:
    step = Decimal(tick)
    return plain(max(step, (price / step).to_integral_value(ROUND_UP if up else ROUND_DOWN) * step))


def min_quantity(gateway: Gateway, symbol: str, price: Decimal) -> str:
    """The smallest lot-aligned quantity above twice the minimum notional."""
    m = market(gateway, symbol)
    lot, floor = Decimal(m["lot_size"]), Decimal(m["min_notional"])
    quantity = ((2 * floor / price) / lot).to_integral_value(ROUND_UP) * lot
    return plain(max(quantity, lot))


def test_helpers_never_send_exponent_notation() -> None:
    # The case a flaky run found: BTC near 5 USD puts the resting price at one tick.
    lots = ((2 * Decimal(1) / Decimal("0.01")) / Decimal("0.0001")).to_integral_value(ROUND_UP)
    quantity = lots * Decimal("0.0001")
    assert "E" in str(quantity)  # what str() would have sent
    assert plain(quantity) == "200"
    assert "E" not in on_tick(Decimal("0.00543"), "0.01", up=False)


def balances(gateway: Gateway, who: str = "alice") -> dict[str, tuple[Decimal, Decimal]]:
    body = gateway.call(who, "GET", "/v1/account").body
    return {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in body["balances"]}


def place(gateway: Gateway, body: dict[str, Any], who: str = "alice") -> Any:
    response = gateway.call(who, "POST", "/v1/orders", body)
    assert response.status in (200, 201), response.body
    return response.body


def test_markets_list_three_asset_classes(gateway: Gateway) -> None:
    response = gateway.call("alice", "GET", "/v1/markets")
    assert response.status == 200
    markets = {m["symbol"]: m for m in response.body["markets"]}
    assert set(markets) == {*SYMBOLS, "MEME-USD"}  # and the thin coin (fraud tests pump it)
    assert {m["asset_class"] for m in markets.values()} == {"crypto", "forex", "stock"}
    for m in markets.values():
        assert set(m) == {"symbol", "base", "quote", "asset_class", "tick_size", "lot_size", "min_notional"}


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_ticker(gateway: Gateway, symbol: str) -> None:
    body = gateway.call("alice", "GET", f"/v1/markets/{symbol}/ticker").body
    assert set(body) == {"symbol", "bid", "ask", "last", "time"}
    assert Decimal(body["bid"]) < Decimal(body["ask"])


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_market_buy_and_sell_move_balances(gateway: Gateway, symbol: str) -> None:
    m = market(gateway, symbol)
    quantity = min_quantity(gateway, symbol, ticker(gateway, symbol)["ask"])
    before = balances(gateway)
    buy = place(
        gateway,
        {
            "client_order_id": cid("mb"),
            "symbol": symbol,
            "side": "buy",
            "type": "market",
            "quantity": quantity,
        },
    )
    assert buy["status"] == "filled"
    assert buy["filled_quantity"] == quantity
    assert buy["fills"]
    after = balances(gateway)
    cost = Decimal(buy["average_price"]) * Decimal(quantity)
    assert after[m["base"]][0] == before[m["base"]][0] + Decimal(quantity)
    assert after[m["quote"]][0] == before[m["quote"]][0] - cost
    sell = place(
        gateway,
        {
            "client_order_id": cid("ms"),
            "symbol": symbol,
            "side": "sell",
            "type": "market",
            "quantity": quantity,
        },
    )
    assert sell["status"] == "filled"
    assert balances(gateway)[m["base"]][0] == before[m["base"]][0]


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_resting_limit_locks_funds_lists_as_open_and_cancels(gateway: Gateway, symbol: str) -> None:
    m = market(gateway, symbol)
    price = on_tick(ticker(gateway, symbol)["bid"] * FAR_BELOW, m["tick_size"], up=False)
    quantity = min_quantity(gateway, symbol, Decimal(price))
    before = balances(gateway)
    order = place(
        gateway,
        {
            "client_order_id": cid("lim"),
            "symbol": symbol,
            "side": "buy",
            "type": "limit",
            "quantity": quantity,
            "price": price,
        },
    )
    assert order["status"] == "new"
    assert order["time_in_force"] == "gtc"
    locked = balances(gateway)[m["quote"]][1] - before[m["quote"]][1]
    assert locked == Decimal(quantity) * Decimal(price)
    open_orders = gateway.call("alice", "GET", "/v1/orders", query=f"status=open&symbol={symbol}").body[
        "orders"
    ]
    assert order["id"] in {o["id"] for o in open_orders}
    assert all(o["symbol"] == symbol for o in open_orders)
    fetched = gateway.call("alice", "GET", f"/v1/orders/{order['id']}").body
    assert fetched["id"] == order["id"]
    canceled = gateway.call("alice", "DELETE", f"/v1/orders/{order['id']}")
    assert canceled.status == 200
    assert canceled.body["status"] == "canceled"
    assert balances(gateway)[m["quote"]][1] == before[m["quote"]][1]
    closed = gateway.call("alice", "GET", "/v1/orders", query="status=closed").body["orders"]
    assert order["id"] in {o["id"] for o in closed}
    again = gateway.call("alice", "DELETE", f"/v1/orders/{order['id']}")
    assert again.status == 422
    assert again.body["error"]["reason"] == "ORDER_NOT_OPEN"


def test_market_order_beyond_depth_fills_partially(gateway: Gateway) -> None:
    # The paper venue offers 2 BTC at the touch per bar.
    order = place(
        gateway,
        {"client_order_id": cid("pm"), "symbol": "BTC-USD", "side": "buy", "type": "market", "quantity": "3"},
    )
    assert (order["status"], order["filled_quantity"]) == ("expired", "2")


def test_gtc_limit_fills_partially_then_rests(gateway: Gateway) -> None:
    price = on_tick(ticker(gateway, "BTC-USD")["ask"] * Decimal("1.2"), "0.01", up=True)
    order = place(
        gateway,
        {
            "client_order_id": cid("pl"),
            "symbol": "BTC-USD",
            "side": "buy",
            "type": "limit",
            "quantity": "3",
            "price": price,
        },
    )
    assert order["status"] in ("partially_filled", "filled")
    assert Decimal(order["filled_quantity"]) >= 2
    if order["status"] == "partially_filled":
        canceled = gateway.call("alice", "DELETE", f"/v1/orders/{order['id']}")
        if canceled.status == 422:  # a new bar filled the rest first (bars last 1 s here)
            assert canceled.body["error"]["reason"] == "ORDER_NOT_OPEN"
            assert gateway.call("alice", "GET", f"/v1/orders/{order['id']}").body["status"] == "filled"
        else:
            assert canceled.body["status"] == "canceled"
            assert Decimal(canceled.body["filled_quantity"]) >= 2


def test_fok_and_ioc(gateway: Gateway) -> None:
    fok = place(
        gateway,
        {
            "client_order_id": cid("fok"),
            "symbol": "BTC-USD",
            "side": "buy",
            "type": "market",
            "quantity": "3",
            "time_in_force": "fok",
        },
    )
    assert (fok["status"], fok["filled_quantity"], fok["fills"]) == ("expired", "0", [])
    price = on_tick(ticker(gateway, "GOOG")["bid"] * FAR_BELOW, "0.01", up=False)
    ioc = place(
        gateway,
        {
            "client_order_id": cid("ioc"),
            "symbol": "GOOG",
            "side": "buy",
            "type": "limit",
            "quantity": min_quantity(gateway, "GOOG", Decimal(price)),
            "price": price,
            "time_in_force": "ioc",
        },
    )
    assert (ioc["status"], ioc["filled_quantity"]) == ("expired", "0")


def _replay(symbol: str) -> Callable[[int], Bar]:
    """The server's replay, computed here: the same series, epoch and (test) bar length."""
    engine = PaperEngine(build_markets(), bar_seconds=1, epoch_us=DEFAULT_EPOCH_US, funding={})
    return lambda number: engine.bar(symbol, number)


def _resting_buy_price(gateway: Gateway, symbol: str, tick: str) -> tuple[str, int]:
    """A buy price below the ask now that a bar 2-8 bars ahead trades through (its low).

    A buy at the last price is not enough: in about 2 % of the EURUSD replay no bar in the
    next 25 comes back down to the close, and such a run once failed CI.
    """
    bar = _replay(symbol)
    for _ in range(20):
        ask = ticker(gateway, symbol)["ask"]
        now = (int(time.time() * 1_000_000) - DEFAULT_EPOCH_US) // 1_000_000
        for ahead in range(2, 9):
            price = on_tick(bar(now + ahead).low, tick, up=True)
            if Decimal(price) < ask:
                return price, ahead
        time.sleep(1)
    raise AssertionError(f"no bar of {symbol} came below the ask in 20 tries")


def test_resting_order_fills_as_prices_move(gateway: Gateway) -> None:
    """A buy inside the spread rests and then fills, at its limit, as a later bar trades through it."""
    tick = market(gateway, "EUR-USD")["tick_size"]
    price, ahead = _resting_buy_price(gateway, "EUR-USD", tick)
    order = place(
        gateway,
        {
            "client_order_id": cid("rest"),
            "symbol": "EUR-USD",
            "side": "buy",
            "type": "limit",
            "quantity": "1000",
            "price": price,
        },
    )
    assert order["status"] in ("new", "filled")  # filled already only if the bar turned meanwhile
    deadline = time.monotonic() + ahead + 15
    status = order["status"]
    while status != "filled" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = gateway.call("alice", "GET", f"/v1/orders/{order['id']}").body["status"]
    assert status == "filled"
    final = gateway.call("alice", "GET", f"/v1/orders/{order['id']}").body
    assert Decimal(final["average_price"]) == Decimal(price)  # a resting order fills at its limit


def test_a_retry_returns_the_first_order_and_a_changed_one_conflicts(gateway: Gateway) -> None:
    body = {
        "client_order_id": cid("idem"),
        "symbol": "GOOG",
        "side": "buy",
        "type": "market",
        "quantity": "1",
    }
    first = gateway.call("alice", "POST", "/v1/orders", body)
    again = gateway.call("alice", "POST", "/v1/orders", body)
    assert (first.status, again.status) == (201, 200)
    assert again.body["id"] == first.body["id"]
    assert again.body["filled_quantity"] == first.body["filled_quantity"]
    conflict = gateway.call("alice", "POST", "/v1/orders", body | {"quantity": "2"})
    assert conflict.status == 409
    assert conflict.body["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    matching = [
        o
        for o in gateway.call("alice", "GET", "/v1/orders", query="limit=500").body["orders"]
        if o["client_order_id"] == body["client_order_id"]
    ]
    assert len(matching) == 1


def test_twenty_concurrent_identical_submissions_place_one_order(gateway: Gateway) -> None:
    body = {
        "client_order_id": cid("burst"),
        "symbol": "GOOG",
        "side": "buy",
        "type": "market",
        "quantity": "1",
    }
    before = balances(gateway)["GOOG"][0]
    results: list[tuple[int, Any]] = []
    barrier = threading.Barrier(20)

    def submit() -> None:
        raw = json.dumps(body).encode()
        headers = gateway.signed_headers("alice", "POST", "/v1/orders", body=raw)
        barrier.wait()
        response = gateway.raw("POST", "/v1/orders", raw, headers)
        results.append((response.status, response.body))

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 20
    assert sorted(status for status, _ in results) == [200] * 19 + [201]
    assert len({b["id"] for _, b in results}) == 1
    assert balances(gateway)["GOOG"][0] == before + 1


def test_balances_report_every_asset(gateway: Gateway) -> None:
    body = gateway.call("alice", "GET", "/v1/account").body
    assert body["account"] == "alice"
    assert {b["asset"] for b in body["balances"]} >= {"USD", "BTC", "EUR", "GOOG"}
    for b in body["balances"]:
        assert set(b) == {"asset", "free", "locked"}
