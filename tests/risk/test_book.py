"""The exposure book: average-cost positions, realised P&L, reservations and their release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bastion.domain.orders import OrderStatus, Side
from bastion.risk.book import ExposureBook, Position
from tests.risk.support import D, order, venue_report

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fills", "quantity", "average", "realised"),
    [
        ([(Side.BUY, "2", "100"), (Side.BUY, "2", "110")], "4", "105", "0"),
        ([(Side.BUY, "4", "100"), (Side.SELL, "1", "90")], "3", "100", "-10"),
        ([(Side.BUY, "2", "100"), (Side.SELL, "5", "120")], "-3", "120", "40"),  # flips short at 120
        ([(Side.SELL, "2", "50"), (Side.BUY, "2", "40")], "0", "0", "20"),  # a short closed at a profit
        ([(Side.SELL, "1", "50"), (Side.SELL, "3", "70")], "-4", "65", "0"),
    ],
)
def test_average_cost_positions(
    fills: list[tuple[Side, str, str]], quantity: str, average: str, realised: str
) -> None:
    position = Position()
    total = D(0)
    for side, q, p in fills:
        total += position.apply_fill(side, D(q), D(p))
    assert (position.quantity, position.average, total) == (D(quantity), D(average), D(realised))


def test_a_reservation_follows_the_order_to_its_close() -> None:
    book = ExposureBook()
    request = order("3", "100")
    tracked = book.reserve("bst_k", "alice", "USD", request, D(100), NOW)
    flow = book.flow("bst_k", NOW.toordinal())
    assert (flow.open_orders, flow.reserved_notional, flow.orders) == (1, D(300), 1)
    assert book.position("alice", "X-USD").open_buy == D(3)

    book.on_venue_order("alice", venue_report(request, NOW, fills=(("100", "1"),)), NOW, "USD")
    assert tracked.confirmed and tracked.filled == D(1)
    assert (flow.reserved_notional, flow.filled_notional, flow.trades) == (D(200), D(100), 1)
    assert (book.position("alice", "X-USD").quantity, book.position("alice", "X-USD").open_buy) == (
        D(1),
        D(2),
    )

    # the same report again (a venue may repeat itself) changes nothing
    book.on_venue_order("alice", venue_report(request, NOW, fills=(("100", "1"),)), NOW, "USD")
    assert flow.trades == 1

    closed = venue_report(request, NOW, fills=(("100", "1"),), status=OrderStatus.CANCELED)
    book.on_venue_order("alice", closed, NOW, "USD")
    assert (flow.open_orders, flow.reserved_notional) == (0, D(0))
    assert book.position("alice", "X-USD").open_buy == D(0)
    assert not book.known("alice", request.client_order_id)
    book.on_venue_order("alice", closed, NOW, "USD")  # a repeat of a closed order is ignored
    assert (flow.open_orders, book.position("alice", "X-USD").quantity) == (0, D(1))


def test_release_gives_back_everything() -> None:
    book = ExposureBook()
    tracked = book.reserve("bst_k", "alice", "USD", order("2", "50", side=Side.SELL), D(50), NOW)
    book.release(tracked)
    flow = book.flow("bst_k", NOW.toordinal())
    assert (flow.open_orders, flow.reserved_notional, flow.orders) == (0, D(0), 0)
    assert book.position("alice", "X-USD").open_sell == D(0)
    book.release(tracked)  # twice is harmless
    assert flow.open_orders == 0


def test_orders_from_before_a_restart_are_taken_in() -> None:
    book = ExposureBook()
    request = order("2", "90")
    yesterday = NOW - timedelta(days=1)
    book.on_venue_order("alice", venue_report(request, yesterday), NOW, "USD", key_id="bst_old")
    flow = book.flow("bst_old", NOW.toordinal())
    assert (flow.open_orders, flow.reserved_notional, flow.orders) == (1, D(180), 0)  # not today's order
    assert book.known("alice", request.client_order_id)


def test_realised_loss_is_kept_per_day_and_quote_asset() -> None:
    book = ExposureBook()
    buy, sell = order("1"), order("1", side=Side.SELL)
    for request, price in ((buy, "100"), (sell, "90")):
        book.reserve("bst_k", "alice", "USD", request, D(price), NOW)
        book.on_venue_order("alice", venue_report(request, NOW, fills=((price, "1"),)), NOW, "USD")
    assert book.account_day("alice", NOW.toordinal()).realised == {"USD": D(-10)}
    assert book.account_day("alice", NOW.toordinal() + 1).realised == {}
