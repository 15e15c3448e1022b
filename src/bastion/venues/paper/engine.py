"""The paper venue's matching engine: pure, synchronous and deterministic under a given time.

Prices replay historical bars: bar number ``n = (t - epoch) // bar_seconds`` shows the
series played forward, then backward, then forward again (a triangle wave over the bars),
so the price never jumps from the last bar back to the first.  The quote is the bar's close
with a fixed half-spread, rounded outward to the tick.  Each bar offers ``depth`` of the
base asset at the touch to each order, so an order larger than that fills partially.

- market orders fill at the touch (buy at the ask, sell at the bid); what the depth does not
  cover expires (``ioc``) or the whole order expires unfilled (``fok``);
- limit orders that cross the touch fill at the touch; the rest rests (``gtc``) or expires
  (``ioc``); ``fok`` fills completely or not at all;
- resting limit orders fill at their limit price in later bars whose low (buy) or high (sell)
  reaches the limit, up to ``depth`` per bar.

Balances: a buy limit locks ``quantity × price`` of the quote asset, a sell locks the base
quantity; fills move locked funds, cancels and expiries release them.  No fees.
Every method returns the set of orders and accounts it changed so the adapter can persist them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from bastion.domain.instruments import Instrument
from bastion.domain.money import ZERO, ceil_to, floor_to
from bastion.domain.orders import OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from bastion.errors import VenueRejected
from bastion.venues.paper.data import Bar

_US = 1_000_000


@dataclass(frozen=True, slots=True)
class Market:
    instrument: Instrument
    bars: Sequence[Bar]
    depth: Decimal
    half_spread: Decimal
    daily_volume: Decimal = ZERO  # typical 24-hour volume in the quote currency; 0: not stated

    def __post_init__(self) -> None:
        if not self.bars or self.depth <= ZERO or not ZERO <= self.half_spread < Decimal("0.1"):
            raise ValueError(f"{self.instrument.symbol}: bars, depth and half-spread must be sensible")


@dataclass(slots=True)
class PaperFill:
    price: Decimal
    quantity: Decimal
    time_us: int


@dataclass(slots=True)
class PaperOrder:
    venue_order_id: str
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    price: Decimal | None
    status: OrderStatus
    created_us: int
    updated_us: int
    filled: Decimal = ZERO
    quote_filled: Decimal = ZERO
    fills: list[PaperFill] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled


@dataclass(slots=True)
class Changes:
    orders: set[str] = field(default_factory=set)
    accounts: set[str] = field(default_factory=set)

    def merge(self, other: Changes) -> Changes:
        self.orders |= other.orders
        self.accounts |= other.accounts
        return self


class _Wallet:
    __slots__ = ("free", "locked")

    def __init__(self, free: Decimal = ZERO, locked: Decimal = ZERO) -> None:
        self.free = free
        self.locked = locked


class PaperEngine:
    def __init__(
        self,
        markets: Mapping[str, Market],
        *,
        bar_seconds: int,
        epoch_us: int,
        funding: Mapping[str, Decimal],
    ) -> None:
        if bar_seconds <= 0:
            raise ValueError("bar_seconds must be positive")
        self.markets = dict(markets)
        self.bar_us = bar_seconds * _US
        self.epoch_us = epoch_us
        self.funding = dict(funding)
        self.wallets: dict[str, dict[str, _Wallet]] = {}
        self.orders: dict[str, PaperOrder] = {}
        self.by_client: dict[tuple[str, str], str] = {}
        self.open_ids: dict[str, set[str]] = {symbol: set() for symbol in self.markets}
        self.cursor: dict[str, int] = {}
        self.sequence = 0

    # -- prices ---------------------------------------------------------------------------
    def bar_number(self, now_us: int) -> int:
        return (now_us - self.epoch_us) // self.bar_us

    def bar(self, symbol: str, number: int) -> Bar:
        bars = self.markets[symbol].bars
        if len(bars) == 1:
            return bars[0]
        period = 2 * len(bars) - 2
        index = number % period
        return bars[index if index < len(bars) else period - index]

    def quote(self, symbol: str, now_us: int) -> tuple[Decimal, Decimal, Decimal]:
        """(bid, ask, last) at ``now_us``."""
        market = self.markets[symbol]
        tick = market.instrument.tick_size
        last = floor_to(self.bar(symbol, self.bar_number(now_us)).close, tick)
        bid = floor_to(last * (1 - market.half_spread), tick)
        ask = ceil_to(last * (1 + market.half_spread), tick)
        if ask <= bid:
            ask = bid + tick
        return max(bid, tick), ask, last

    # -- accounts -------------------------------------------------------------------------
    def has_account(self, account: str) -> bool:
        return account in self.wallets

    def open_account(self, account: str) -> Changes:
        if account in self.wallets:
            raise VenueRejected("ACCOUNT_EXISTS")
        self.wallets[account] = {asset: _Wallet(amount) for asset, amount in self.funding.items()}
        return Changes(accounts={account})

    def restore_account(
        self, account: str, balances: Mapping[str, tuple[Decimal, Decimal]], orders: Sequence[PaperOrder]
    ) -> None:
        self.wallets[account] = {a: _Wallet(f, lk) for a, (f, lk) in balances.items()}
        for order in orders:
            self.orders[order.venue_order_id] = order
            self.by_client[(account, order.client_order_id)] = order.venue_order_id
            if order.status.is_open:
                self.open_ids[order.symbol].add(order.venue_order_id)

    def balances(self, account: str) -> dict[str, tuple[Decimal, Decimal]]:
        return {asset: (w.free, w.locked) for asset, w in self.wallets[account].items()}

    def _wallet(self, account: str, asset: str) -> _Wallet:
        return self.wallets[account].setdefault(asset, _Wallet())

    # -- orders ---------------------------------------------------------------------------
    def find(self, account: str, venue_order_id: str) -> PaperOrder | None:
        order = self.orders.get(venue_order_id)
        return order if order is not None and order.account == account else None

    def place(self, account: str, request: OrderRequest, now_us: int) -> tuple[PaperOrder, Changes]:
        existing = self.by_client.get((account, request.client_order_id))
        if existing is not None:  # the venue is idempotent on the client order id too
            return self.orders[existing], Changes()
        market = self.markets.get(request.symbol)
        if market is None:
            raise VenueRejected("UNKNOWN_SYMBOL")
        if account not in self.wallets:
            raise VenueRejected("UNKNOWN_ACCOUNT")
        instrument = market.instrument
        bid, ask, _ = self.quote(request.symbol, now_us)
        is_market = request.type is OrderType.MARKET
        if is_market and request.price is not None:
            raise VenueRejected("PRICE_NOT_ALLOWED")
        if not is_market and request.price is None:
            raise VenueRejected("PRICE_REQUIRED")
        if is_market and request.time_in_force is TimeInForce.GTC:
            raise VenueRejected("TIME_IN_FORCE_NOT_ALLOWED")
        reference = ask if request.side is Side.BUY else bid
        rule = instrument.check(request.quantity, request.price, reference)
        if rule is not None:
            raise VenueRejected(rule)
        base = self._wallet(account, instrument.base)
        quote = self._wallet(account, instrument.quote)
        if request.side is Side.BUY:
            need = request.quantity * (ask if is_market else request.price or ZERO)
            if quote.free < need:
                raise VenueRejected("INSUFFICIENT_BALANCE")
            if not is_market:
                quote.free -= need
                quote.locked += need
        else:
            if base.free < request.quantity:
                raise VenueRejected("INSUFFICIENT_BALANCE")
            base.free -= request.quantity
            base.locked += request.quantity
        self.sequence += 1
        order = PaperOrder(
            venue_order_id=f"P{self.sequence:012d}",
            account=account,
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            time_in_force=request.time_in_force,
            quantity=request.quantity,
            price=request.price,
            status=OrderStatus.NEW,
            created_us=now_us,
            updated_us=now_us,
        )
        self.orders[order.venue_order_id] = order
        self.by_client[(account, order.client_order_id)] = order.venue_order_id
        self.cursor.setdefault(order.symbol, self.bar_number(now_us))
        touch = ask if order.side is Side.BUY else bid
        crosses = is_market or (
            order.price is not None and (order.price >= ask if order.side is Side.BUY else order.price <= bid)
        )
        depth = market.depth
        if order.time_in_force is TimeInForce.FOK and (not crosses or order.quantity > depth):
            self._close(order, OrderStatus.EXPIRED, now_us)
        else:
            if crosses:
                self._fill(order, min(order.quantity, depth), touch, now_us)
            if order.status.is_open:
                if order.time_in_force is TimeInForce.GTC:
                    self.open_ids[order.symbol].add(order.venue_order_id)
                else:
                    self._close(order, OrderStatus.EXPIRED, now_us)
        return order, Changes(orders={order.venue_order_id}, accounts={account})

    def cancel(self, account: str, venue_order_id: str, now_us: int) -> tuple[PaperOrder, Changes]:
        order = self.find(account, venue_order_id)
        if order is None:
            raise VenueRejected("UNKNOWN_ORDER")
        if not order.status.is_open:
            raise VenueRejected("ORDER_NOT_OPEN")
        self._close(order, OrderStatus.CANCELED, now_us)
        return order, Changes(orders={venue_order_id}, accounts={account})

    def advance(self, now_us: int) -> Changes:
        """Match resting orders against every bar that began since the last call."""
        changes = Changes()
        current = self.bar_number(now_us)
        for symbol, open_ids in self.open_ids.items():
            start = self.cursor.get(symbol, current)
            self.cursor[symbol] = current
            if not open_ids or current <= start:
                continue
            market = self.markets[symbol]
            first = max(start + 1, current - len(market.bars) + 1)
            for number in range(first, current + 1):
                bar = self.bar(symbol, number)
                time_us = self.epoch_us + number * self.bar_us
                for venue_order_id in sorted(open_ids):
                    order = self.orders[venue_order_id]
                    price = order.price
                    if price is None:
                        continue
                    if (order.side is Side.BUY and bar.low <= price) or (
                        order.side is Side.SELL and bar.high >= price
                    ):
                        self._fill(order, min(order.remaining, market.depth), price, time_us)
                        changes.orders.add(venue_order_id)
                        changes.accounts.add(order.account)
                open_ids.difference_update({i for i in open_ids if not self.orders[i].status.is_open})
                if not open_ids:
                    break
        return changes

    # -- internals ------------------------------------------------------------------------
    def _fill(self, order: PaperOrder, quantity: Decimal, price: Decimal, time_us: int) -> None:
        if quantity <= ZERO:
            return
        instrument = self.markets[order.symbol].instrument
        base = self._wallet(order.account, instrument.base)
        quote = self._wallet(order.account, instrument.quote)
        cost = quantity * price
        if order.side is Side.BUY:
            if order.price is not None:  # release the lock taken at the limit price
                reserved = quantity * order.price
                quote.locked -= reserved
                quote.free += reserved - cost
            else:
                quote.free -= cost
            base.free += quantity
        else:
            base.locked -= quantity
            quote.free += cost
        order.filled += quantity
        order.quote_filled += cost
        order.fills.append(PaperFill(price, quantity, time_us))
        order.status = OrderStatus.FILLED if order.filled == order.quantity else OrderStatus.PARTIALLY_FILLED
        order.updated_us = time_us

    def _close(self, order: PaperOrder, status: OrderStatus, now_us: int) -> None:
        instrument = self.markets[order.symbol].instrument
        remaining = order.remaining
        if order.side is Side.BUY and order.price is not None:
            wallet = self._wallet(order.account, instrument.quote)
            wallet.locked -= remaining * order.price
            wallet.free += remaining * order.price
        elif order.side is Side.SELL:
            wallet = self._wallet(order.account, instrument.base)
            wallet.locked -= remaining
            wallet.free += remaining
        order.status = status
        order.updated_us = now_us
        self.open_ids[order.symbol].discard(order.venue_order_id)
