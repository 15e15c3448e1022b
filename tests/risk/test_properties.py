"""Property: no sequence of orders, fills and cancels takes a position, the daily notional or
the open-order count past its limit.

Hypothesis drives a small venue of our own: it accepts what the risk engine lets through,
fills open orders (partly or wholly, at their limit price or, for market orders, at the
touch), cancels them, and reports every change to the book as a venue would.  The checks
recompute the truth from that venue's own records, not from the book."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.domain.orders import OrderRequest, OrderStatus, Side
from bastion.domain.trading import TradingState
from bastion.risk.book import ExposureBook, TrackedOrder
from bastion.risk.engine import RiskEngine
from tests.risk.support import D, FixedMarket, order, policy, venue_report

LIMITS = {"max_position": "5", "max_daily_notional": "2000", "max_open_orders": 4}
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@dataclass
class VenueOrderState:
    request: OrderRequest
    fills: list[tuple[str, str]] = field(default_factory=list)
    status: OrderStatus = OrderStatus.NEW

    @property
    def filled(self) -> Decimal:
        return sum((D(q) for _, q in self.fills), D(0))


class SmallVenue:
    def __init__(self) -> None:
        self.now = START
        self.book = ExposureBook()
        self.market = FixedMarket(START)
        self.engine = RiskEngine(self.book, self.market)
        self.orders: list[VenueOrderState] = []

    def report(self, state: VenueOrderState) -> None:
        status = state.status
        if status.is_open:
            status = OrderStatus.FILLED if state.filled == state.request.quantity else status
        state.status = status
        self.book.on_venue_order(
            "alice",
            venue_report(state.request, self.now, fills=tuple(state.fills), status=status),
            self.now,
            "USD",
        )

    def place(self, side: Side, quantity: Decimal, price: Decimal | None) -> None:
        request = order(str(quantity), None if price is None else str(price), side=side)
        result = self.engine.place("bst_k", "alice", policy(**LIMITS), TradingState.ACTIVE, request, self.now)
        if isinstance(result, TrackedOrder):
            self.orders.append(VenueOrderState(request))
            self.report(self.orders[-1])

    def fill(self, index: int, share: Decimal) -> None:
        open_orders = [o for o in self.orders if o.status.is_open]
        if not open_orders:
            return
        state = open_orders[index % len(open_orders)]
        remaining = state.request.quantity - state.filled
        quantity = max(D("0.1"), (remaining * share).quantize(D("0.1")))
        quantity = min(quantity, remaining)
        quote = self.market.quotes["X-USD"]
        price = state.request.price or (quote.ask if state.request.side is Side.BUY else quote.bid)
        state.fills.append((str(price), str(quantity)))
        self.report(state)

    def cancel(self, index: int) -> None:
        open_orders = [o for o in self.orders if o.status.is_open]
        if open_orders:
            state = open_orders[index % len(open_orders)]
            state.status = OrderStatus.CANCELED
            self.report(state)

    def check(self) -> None:
        position = sum(
            (D(q) if o.request.side is Side.BUY else -D(q) for o in self.orders for _, q in o.fills), D(0)
        )
        assert abs(position) <= D(LIMITS["max_position"])
        today = sum((D(p) * D(q) for o in self.orders for p, q in o.fills), D(0))
        assert today <= D(LIMITS["max_daily_notional"])
        assert sum(1 for o in self.orders if o.status.is_open) <= LIMITS["max_open_orders"]


quantities = st.integers(1, 40).map(lambda n: D(n) / 10)
prices = st.one_of(st.none(), st.integers(9_000, 11_000).map(lambda n: D(n) / 100))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("place"), st.sampled_from(Side), quantities, prices),
        st.tuples(st.just("fill"), st.integers(0, 10), st.sampled_from([D("0.3"), D("0.5"), D(1)])),
        st.tuples(st.just("cancel"), st.integers(0, 10)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_no_sequence_breaks_a_limit(ops: list[tuple[object, ...]]) -> None:
    venue = SmallVenue()
    for op in ops:
        if op[0] == "place":
            _, side, quantity, price = op
            assert isinstance(side, Side) and isinstance(quantity, Decimal)
            venue.place(side, quantity, price if isinstance(price, Decimal) else None)
        elif op[0] == "fill":
            _, index, share = op
            assert isinstance(index, int) and isinstance(share, Decimal)
            venue.fill(index, share)
        else:
            _, index = op
            assert isinstance(index, int)
            venue.cancel(index)
        venue.check()


@settings(max_examples=100, deadline=None)
@given(operations)
def test_the_book_agrees_with_the_venue(ops: list[tuple[object, ...]]) -> None:
    """After any sequence, the book's position and open orders equal the venue's."""
    venue = SmallVenue()
    for op in ops:
        if op[0] == "place":
            venue.place(op[1], op[2], op[3])  # type: ignore[arg-type]
        elif op[0] == "fill":
            venue.fill(op[1], op[2])  # type: ignore[arg-type]
        else:
            venue.cancel(op[1])  # type: ignore[arg-type]
        venue.now += timedelta(milliseconds=10)
    position = venue.book.position("alice", "X-USD")
    truth = sum(
        (D(q) if o.request.side is Side.BUY else -D(q) for o in venue.orders for _, q in o.fills), D(0)
    )
    assert position.quantity == truth
    open_buy = sum(
        (
            o.request.quantity - o.filled
            for o in venue.orders
            if o.status.is_open and o.request.side is Side.BUY
        ),
        D(0),
    )
    assert position.open_buy == open_buy
    flow = venue.book.flow("bst_k", venue.now.toordinal())
    assert flow.open_orders == sum(1 for o in venue.orders if o.status.is_open)
    quote = venue.market.quotes["X-USD"]

    def unit(o: VenueOrderState) -> Decimal:
        return o.request.price or (quote.ask if o.request.side is Side.BUY else quote.bid)

    reserved = sum(
        ((o.request.quantity - o.filled) * unit(o) for o in venue.orders if o.status.is_open), D(0)
    )
    assert flow.reserved_notional == reserved
