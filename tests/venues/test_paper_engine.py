"""The paper matching engine, deterministic under given times and synthetic bars."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bastion.domain.instruments import AssetClass, Instrument
from bastion.domain.orders import OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from bastion.errors import VenueRejected
from bastion.venues.paper.data import Bar
from bastion.venues.paper.engine import Market, PaperEngine

D = Decimal
BAR_US = 1_000_000


def bar(close: str, low: str | None = None, high: str | None = None) -> Bar:
    c = D(close)
    return Bar(c, D(high) if high else c, D(low) if low else c, c)


# With a zero half-spread the quote keeps a one-tick spread: bid = close, ask = close + 0.01.
def make_engine(bars: list[Bar] | None = None) -> PaperEngine:
    instrument = Instrument("X-USD", "X", "USD", AssetClass.CRYPTO, D("0.01"), D("0.1"), D("1"))
    market = Market(
        instrument, bars or [bar("100"), bar("100", low="95"), bar("100", high="105")], D("2"), D("0")
    )
    engine = PaperEngine({"X-USD": market}, bar_seconds=1, epoch_us=0, funding={"USD": D(10_000), "X": D(10)})
    engine.open_account("a")
    return engine


def req(
    cid: str, side: Side, typ: OrderType, qty: str, price: str | None = None, tif: TimeInForce | None = None
) -> OrderRequest:
    default = TimeInForce.IOC if typ is OrderType.MARKET else TimeInForce.GTC
    return OrderRequest(cid, "X-USD", side, typ, D(qty), D(price) if price else None, tif or default)


def test_quote_replays_bars_with_spread() -> None:
    instrument = Instrument("X-USD", "X", "USD", AssetClass.CRYPTO, D("0.01"), D("0.1"), D("1"))
    market = Market(instrument, [bar("100"), bar("200")], D("1"), D("0.001"))
    engine = PaperEngine({"X-USD": market}, bar_seconds=60, epoch_us=0, funding={})
    assert engine.quote("X-USD", 0) == (D("99.90"), D("100.10"), D("100"))
    assert engine.quote("X-USD", 60 * BAR_US)[2] == D("200")
    assert engine.quote("X-USD", 120 * BAR_US)[2] == D("100")  # and back


def test_replay_runs_forward_then_backward_without_a_jump() -> None:
    instrument = Instrument("X-USD", "X", "USD", AssetClass.CRYPTO, D("0.01"), D("0.1"), D("1"))
    market = Market(instrument, [bar("1"), bar("2"), bar("3")], D("1"), D("0"))
    engine = PaperEngine({"X-USD": market}, bar_seconds=1, epoch_us=0, funding={})
    closes = [engine.bar("X-USD", n).close for n in range(9)]
    assert closes == [D(c) for c in (1, 2, 3, 2, 1, 2, 3, 2, 1)]


def test_market_buy_fills_up_to_depth_and_expires_the_rest() -> None:
    engine = make_engine()
    order, _ = engine.place("a", req("m1", Side.BUY, OrderType.MARKET, "3"), 0)
    assert order.status is OrderStatus.EXPIRED
    assert order.filled == D("2")
    assert engine.balances("a")["X"] == (D("12"), D("0"))
    assert engine.balances("a")["USD"] == (D("9799.98"), D("0"))


def test_fok_is_all_or_nothing() -> None:
    engine = make_engine()
    big, _ = engine.place("a", req("f1", Side.BUY, OrderType.MARKET, "3", tif=TimeInForce.FOK), 0)
    assert (big.status, big.filled) == (OrderStatus.EXPIRED, D("0"))
    small, _ = engine.place("a", req("f2", Side.BUY, OrderType.MARKET, "2", tif=TimeInForce.FOK), 0)
    assert (small.status, small.filled) == (OrderStatus.FILLED, D("2"))
    assert engine.balances("a")["USD"] == (D("9799.98"), D("0"))


def test_gtc_limit_rests_then_fills_partially_per_bar() -> None:
    engine = make_engine([bar("100"), bar("100", low="95"), bar("100", low="95"), bar("100")])
    order, _ = engine.place("a", req("l1", Side.BUY, OrderType.LIMIT, "3", "96"), 0)
    assert order.status is OrderStatus.NEW
    assert engine.balances("a")["USD"] == (D("9712"), D("288"))
    engine.advance(1 * BAR_US)
    assert (order.status, order.filled) == (OrderStatus.PARTIALLY_FILLED, D("2"))
    engine.advance(2 * BAR_US)
    assert (order.status, order.filled) == (OrderStatus.FILLED, D("3"))
    assert engine.balances("a")["USD"] == (D("9712"), D("0"))
    assert engine.balances("a")["X"] == (D("13"), D("0"))


def test_crossing_limit_fills_at_the_touch_and_refunds_the_difference() -> None:
    engine = make_engine()
    order, _ = engine.place("a", req("l2", Side.BUY, OrderType.LIMIT, "1", "150"), 0)
    assert order.status is OrderStatus.FILLED
    assert order.fills[0].price == D("100.01")
    assert engine.balances("a")["USD"] == (D("9899.99"), D("0"))


def test_ioc_limit_expires_what_it_cannot_fill() -> None:
    engine = make_engine()
    order, _ = engine.place("a", req("i1", Side.SELL, OrderType.LIMIT, "3", "90", TimeInForce.IOC), 0)
    assert (order.status, order.filled) == (OrderStatus.EXPIRED, D("2"))
    assert engine.balances("a")["X"] == (D("8"), D("0"))


def test_cancel_releases_the_lock_and_only_open_orders_cancel() -> None:
    engine = make_engine()
    order, _ = engine.place("a", req("c1", Side.SELL, OrderType.LIMIT, "4", "200"), 0)
    assert engine.balances("a")["X"] == (D("6"), D("4"))
    engine.cancel("a", order.venue_order_id, 0)
    assert order.status is OrderStatus.CANCELED
    assert engine.balances("a")["X"] == (D("10"), D("0"))
    with pytest.raises(VenueRejected) as caught:
        engine.cancel("a", order.venue_order_id, 0)
    assert caught.value.reason == "ORDER_NOT_OPEN"


def test_orders_of_another_account_are_invisible() -> None:
    engine = make_engine()
    engine.open_account("b")
    order, _ = engine.place("a", req("o1", Side.SELL, OrderType.LIMIT, "1", "200"), 0)
    assert engine.find("b", order.venue_order_id) is None
    with pytest.raises(VenueRejected):
        engine.cancel("b", order.venue_order_id, 0)


def test_same_client_order_id_returns_the_same_order() -> None:
    engine = make_engine()
    first, _ = engine.place("a", req("dup", Side.BUY, OrderType.MARKET, "1"), 0)
    again, changes = engine.place("a", req("dup", Side.BUY, OrderType.MARKET, "1"), 0)
    assert again is first
    assert not changes.orders
    assert engine.balances("a")["X"] == (D("11"), D("0"))


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (req("r1", Side.BUY, OrderType.LIMIT, "0.15", "100"), "LOT_SIZE"),
        (req("r2", Side.BUY, OrderType.LIMIT, "1", "100.001"), "TICK_SIZE"),
        (req("r3", Side.BUY, OrderType.LIMIT, "0.1", "9.99"), "MIN_NOTIONAL"),
        (req("r4", Side.BUY, OrderType.LIMIT, "1000", "100"), "INSUFFICIENT_BALANCE"),
        (req("r5", Side.SELL, OrderType.MARKET, "11"), "INSUFFICIENT_BALANCE"),
        (req("r6", Side.BUY, OrderType.LIMIT, "1"), "PRICE_REQUIRED"),
        (req("r7", Side.BUY, OrderType.MARKET, "1", "100"), "PRICE_NOT_ALLOWED"),
        (req("r8", Side.BUY, OrderType.MARKET, "1", tif=TimeInForce.GTC), "TIME_IN_FORCE_NOT_ALLOWED"),
    ],
)
def test_rejections_change_nothing(request_: OrderRequest, reason: str) -> None:
    engine = make_engine()
    before = engine.balances("a")
    with pytest.raises(VenueRejected) as caught:
        engine.place("a", request_, 0)
    assert caught.value.reason == reason
    assert engine.balances("a") == before
    assert not engine.orders


def test_unknown_symbol_and_account() -> None:
    engine = make_engine()
    with pytest.raises(VenueRejected, match="UNKNOWN_SYMBOL"):
        engine.place(
            "a", OrderRequest("u", "NOPE", Side.BUY, OrderType.MARKET, D(1), None, TimeInForce.IOC), 0
        )
    with pytest.raises(VenueRejected, match="UNKNOWN_ACCOUNT"):
        engine.place("zz", req("u2", Side.BUY, OrderType.MARKET, "1"), 0)


class EngineMachine(RuleBasedStateMachine):
    """No sequence of orders, fills and cancels creates or destroys value, or goes negative."""

    def __init__(self) -> None:
        super().__init__()
        bars = [bar("100", "90", "110"), bar("95", "80", "100"), bar("105", "100", "120"), bar("100")]
        self.engine = make_engine(bars)
        self.now = 0
        self.count = 0
        self.value_moved = D(0)

    @rule(
        side=st.sampled_from(Side),
        typ=st.sampled_from(OrderType),
        qty=st.integers(min_value=1, max_value=40).map(lambda n: D(n) / 10),
        price=st.integers(min_value=8000, max_value=12000).map(lambda n: D(n) / 100),
        tif=st.sampled_from(TimeInForce),
    )
    def place(self, side: Side, typ: OrderType, qty: Decimal, price: Decimal, tif: TimeInForce) -> None:
        self.count += 1
        if typ is OrderType.MARKET and tif is TimeInForce.GTC:
            tif = TimeInForce.IOC
        request = OrderRequest(
            f"p{self.count}", "X-USD", side, typ, qty, price if typ is OrderType.LIMIT else None, tif
        )
        try:
            self.engine.place("a", request, self.now)
        except VenueRejected as exc:
            assert exc.reason in {"INSUFFICIENT_BALANCE", "MIN_NOTIONAL"}

    @rule(seconds=st.integers(min_value=1, max_value=5))
    def tick(self, seconds: int) -> None:
        self.now += seconds * BAR_US
        self.engine.advance(self.now)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        open_orders = sorted(i for ids in self.engine.open_ids.values() for i in ids)
        if open_orders:
            self.engine.cancel("a", data.draw(st.sampled_from(open_orders)), self.now)

    @invariant()
    def balances_are_consistent(self) -> None:
        balances = self.engine.balances("a")
        for free, locked in balances.values():
            assert free >= 0 and locked >= 0
        orders = list(self.engine.orders.values())
        bought = sum((o.filled for o in orders if o.side is Side.BUY), D(0))
        sold = sum((o.filled for o in orders if o.side is Side.SELL), D(0))
        spent = sum((o.quote_filled for o in orders if o.side is Side.BUY), D(0))
        received = sum((o.quote_filled for o in orders if o.side is Side.SELL), D(0))
        x_free, x_locked = balances["X"]
        usd_free, usd_locked = balances["USD"]
        assert x_free + x_locked == D(10) + bought - sold
        assert usd_free + usd_locked == D(10_000) - spent + received
        open_sell = sum((o.remaining for o in orders if o.side is Side.SELL and o.status.is_open), D(0))
        open_buy = sum(
            (o.remaining * (o.price or 0) for o in orders if o.side is Side.BUY and o.status.is_open), D(0)
        )
        assert x_locked == open_sell
        assert usd_locked == open_buy
        for order in orders:
            assert 0 <= order.filled <= order.quantity
            if order.status is OrderStatus.FILLED:
                assert order.filled == order.quantity


TestEngineMachine = EngineMachine.TestCase
TestEngineMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
