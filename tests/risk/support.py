"""A fixed market and helpers for risk tests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from bastion.domain.instruments import AssetClass, Instrument
from bastion.domain.orders import (
    Fill,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    Ticker,
    TimeInForce,
    VenueOrder,
)
from bastion.domain.policy import EffectivePolicy, document_from, effective
from bastion.domain.principals import Scope

D = Decimal
# X-USD: tick 0.01, lot 0.1, minimum notional 1; quoted 99.99 / 100.01, last 100.
INSTRUMENT = Instrument("X-USD", "X", "USD", AssetClass.CRYPTO, D("0.01"), D("0.1"), D("1"))
OTHER = Instrument("Y-USD", "Y", "USD", AssetClass.STOCK, D("0.01"), D("1"), D("1"))


class FixedMarket:
    def __init__(self, when: datetime) -> None:
        self.when = when
        self.quotes = {
            "X-USD": Ticker("X-USD", D("99.99"), D("100.01"), D("100"), when),
            "Y-USD": Ticker("Y-USD", D("49.99"), D("50.01"), D("50"), when),
        }

    def instrument(self, symbol: str) -> Instrument | None:
        return {"X-USD": INSTRUMENT, "Y-USD": OTHER}.get(symbol)

    def quote(self, symbol: str) -> Ticker | None:
        return self.quotes.get(symbol)


def policy(**fields: Any) -> EffectivePolicy:
    return effective(frozenset(Scope), document_from(fields), None)


_counter = iter(range(1, 10**9))


def order(
    quantity: str = "1",
    price: str | None = None,
    *,
    side: Side = Side.BUY,
    symbol: str = "X-USD",
    tif: TimeInForce | None = None,
    client_order_id: str | None = None,
) -> OrderRequest:
    kind = OrderType.MARKET if price is None else OrderType.LIMIT
    return OrderRequest(
        client_order_id or f"c{next(_counter)}",
        symbol,
        side,
        kind,
        D(quantity),
        None if price is None else D(price),
        tif or (TimeInForce.IOC if price is None else TimeInForce.GTC),
    )


def venue_report(
    request: OrderRequest,
    when: datetime,
    *,
    fills: tuple[tuple[str, str], ...] = (),
    status: OrderStatus | None = None,
) -> VenueOrder:
    """What a venue would report for ``request`` with these (price, quantity) fills."""
    filled = sum((D(q) for _, q in fills), D(0))
    if status is None:
        status = OrderStatus.FILLED if filled == request.quantity else OrderStatus.NEW
        if D(0) < filled < request.quantity:
            status = OrderStatus.PARTIALLY_FILLED
    return VenueOrder(
        venue_order_id="V" + request.client_order_id,
        client_order_id=request.client_order_id,
        symbol=request.symbol,
        side=request.side,
        type=request.type,
        time_in_force=request.time_in_force,
        quantity=request.quantity,
        price=request.price,
        status=status,
        filled_quantity=filled,
        average_price=None,
        created_at=when,
        updated_at=when,
        fills=tuple(Fill(D(p), D(q), when) for p, q in fills),
    )
