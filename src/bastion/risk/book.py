"""The exposure book: what the risk stage knows of live state.  Pure and synchronous.

It tracks every order from the moment the risk stage reserves capacity for it until the
venue reports it closed:

- per key: open orders, the notional those still reserve, today's orders, trades (fills)
  and filled notional, and token buckets for order and cancel rates;
- per account and symbol: the net position traded through Bastion (signed, in the base
  asset; average-cost accounting) and the quantity open orders could still add on each side;
- per account: today's realised profit and loss, per quote asset.

A reservation is taken atomically with the checks (no ``await`` between them) and is
released when the venue refuses the order, converted as the venue reports fills, and freed
when the order closes.  "Today" is the UTC day of the injected clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from bastion.domain.orders import Fill, OrderRequest, Side, VenueOrder
from bastion.state.buckets import TokenBucket

ZERO = Decimal(0)
_CLOSED_MEMORY = 100_000


@dataclass(slots=True)
class TrackedOrder:
    account: str
    key_id: str
    client_order_id: str
    symbol: str
    quote: str
    side: Side
    quantity: Decimal
    reserve_price: Decimal  # the unit price its notional is reserved at (limit, or reference)
    filled: Decimal = ZERO
    fills_seen: int = 0
    open: bool = True
    confirmed: bool = False  # the venue has reported it

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled


@dataclass(slots=True)
class KeyFlow:
    open_orders: int = 0
    reserved_notional: Decimal = ZERO
    day: int = -1
    orders: int = 0
    trades: int = 0
    filled_notional: Decimal = ZERO
    order_bucket: TokenBucket | None = None
    cancel_bucket: TokenBucket | None = None

    def roll(self, day: int) -> None:
        if day != self.day:
            self.day, self.orders, self.trades, self.filled_notional = day, 0, 0, ZERO


@dataclass(slots=True)
class Position:
    quantity: Decimal = ZERO  # signed: long > 0, short < 0
    average: Decimal = ZERO
    open_buy: Decimal = ZERO
    open_sell: Decimal = ZERO

    def apply_fill(self, side: Side, quantity: Decimal, price: Decimal) -> Decimal:
        """Move the position by a fill; the profit or loss it realises (quote asset)."""
        signed = quantity if side is Side.BUY else -quantity
        realised = ZERO
        if self.quantity == ZERO or (self.quantity > ZERO) == (signed > ZERO):
            total = self.quantity + signed
            self.average = (self.average * abs(self.quantity) + price * quantity) / abs(total)
            self.quantity = total
            return realised
        closing = min(quantity, abs(self.quantity))
        direction = Decimal(1) if self.quantity > ZERO else Decimal(-1)
        realised = (price - self.average) * closing * direction
        self.quantity += signed
        if self.quantity == ZERO:
            self.average = ZERO
        elif (self.quantity > ZERO) == (signed > ZERO):  # flipped: the rest opens at this price
            self.average = price
        return realised


@dataclass(slots=True)
class AccountDay:
    day: int = -1
    realised: dict[str, Decimal] = field(default_factory=dict)  # quote asset -> today's realised P&L

    def roll(self, day: int) -> None:
        if day != self.day:
            self.day = day
            self.realised = {}


def day_of(when: datetime) -> int:
    return when.toordinal()


class ExposureBook:
    def __init__(self) -> None:
        self.orders: dict[tuple[str, str], TrackedOrder] = {}  # (account, client order id)
        self.flows: dict[str, KeyFlow] = {}
        self.positions: dict[tuple[str, str], Position] = {}  # (account, symbol)
        self.days: dict[str, AccountDay] = {}
        # Orders closed lately: a venue that reports one again must not count its fills twice.
        self._closed: dict[tuple[str, str], None] = {}

    # -- reading -----------------------------------------------------------------------------
    def known(self, account: str, client_order_id: str) -> bool:
        return (account, client_order_id) in self.orders

    def flow(self, key_id: str, day: int) -> KeyFlow:
        flow = self.flows.get(key_id)
        if flow is None:
            flow = self.flows[key_id] = KeyFlow()
        flow.roll(day)
        return flow

    def position(self, account: str, symbol: str) -> Position:
        position = self.positions.get((account, symbol))
        if position is None:
            position = self.positions[(account, symbol)] = Position()
        return position

    def account_day(self, account: str, day: int) -> AccountDay:
        state = self.days.get(account)
        if state is None:
            state = self.days[account] = AccountDay()
        state.roll(day)
        return state

    # -- changing ----------------------------------------------------------------------------
    def reserve(
        self,
        key_id: str,
        account: str,
        quote: str,
        request: OrderRequest,
        reserve_price: Decimal,
        now: datetime,
    ) -> TrackedOrder:
        order = TrackedOrder(
            account,
            key_id,
            request.client_order_id,
            request.symbol,
            quote,
            request.side,
            request.quantity,
            reserve_price,
        )
        self._reserve(order, now, count=True)
        return order

    def _reserve(self, order: TrackedOrder, now: datetime, *, count: bool) -> None:
        self.orders[(order.account, order.client_order_id)] = order
        flow = self.flow(order.key_id, day_of(now))
        flow.open_orders += 1
        flow.reserved_notional += order.quantity * order.reserve_price
        if count:
            flow.orders += 1
        self._open_side(order, order.quantity)

    def release(self, order: TrackedOrder) -> None:
        """The venue never took the order: give back all it reserved."""
        if self.orders.get((order.account, order.client_order_id)) is not order or not order.open:
            return
        self._close(order)
        self._closed.pop((order.account, order.client_order_id), None)  # it may come again, as new
        flow = self.flows.get(order.key_id)
        if flow is not None and flow.orders > 0:
            flow.orders -= 1  # a refused order was never sent

    def on_venue_order(
        self, account: str, venue_order: VenueOrder, now: datetime, quote: str, key_id: str = ""
    ) -> None:
        """The venue reports an order's state: take in new fills; free what a closed order held.
        An order the book does not know (placed before a restart) is taken in under ``key_id``."""
        key = (account, venue_order.client_order_id)
        order = self.orders.get(key)
        if order is None and key in self._closed:
            return
        if order is None:
            price = venue_order.price if venue_order.price is not None else venue_order.average_price
            order = TrackedOrder(
                account,
                key_id,
                venue_order.client_order_id,
                venue_order.symbol,
                quote,
                venue_order.side,
                venue_order.quantity,
                price or ZERO,
            )
            self._reserve(order, now, count=day_of(venue_order.created_at) == day_of(now))
        order.confirmed = True
        if not order.open:
            return
        self._take_fills(order, venue_order.fills[order.fills_seen :], now)
        order.fills_seen = len(venue_order.fills)
        if not venue_order.status.is_open:
            self._close(order)

    def _take_fills(self, order: TrackedOrder, fills: Iterable[Fill], now: datetime) -> None:
        today = day_of(now)
        flow = self.flow(order.key_id, today)
        position = self.position(order.account, order.symbol)
        for fill in fills:
            quantity = min(fill.quantity, order.remaining)
            if quantity <= ZERO:
                continue
            order.filled += quantity
            flow.reserved_notional -= quantity * order.reserve_price
            self._open_side(order, -quantity)
            realised = position.apply_fill(order.side, quantity, fill.price)
            if day_of(fill.time) == today:
                flow.trades += 1
                flow.filled_notional += quantity * fill.price
                if realised:
                    day = self.account_day(order.account, today)
                    day.realised[order.quote] = day.realised.get(order.quote, ZERO) + realised

    def _close(self, order: TrackedOrder) -> None:
        order.open = False
        key = (order.account, order.client_order_id)
        if self.orders.get(key) is order:
            del self.orders[key]
        self._closed[key] = None
        if len(self._closed) > _CLOSED_MEMORY:
            del self._closed[next(iter(self._closed))]
        flow = self.flows.get(order.key_id)
        if flow is not None:
            flow.open_orders -= 1
            flow.reserved_notional -= order.remaining * order.reserve_price
        self._open_side(order, -order.remaining)

    def _open_side(self, order: TrackedOrder, delta: Decimal) -> None:
        position = self.position(order.account, order.symbol)
        if order.side is Side.BUY:
            position.open_buy += delta
        else:
            position.open_sell += delta
