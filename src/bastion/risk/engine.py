"""Pre-trade checks: one order against its key's effective policy, the trading state, the
instrument's rules and the exposure book.  Synchronous, so checking and reserving are one
atomic step on the event loop: concurrent orders cannot jointly break a limit.

Checks run cheapest and most absolute first; the first one that fails is the answer.  Each
has a stable public reason code (docs/policies.md):

==========================  =========================================================
reason                      refused when
==========================  =========================================================
TRADING_HALTED              the key, its account or the whole gateway is HALTED
SYMBOL_NOT_ALLOWED          ``symbols`` is set and does not hold the order's symbol
SIDE_NOT_ALLOWED            ``sides`` is set and does not hold the order's side
ORDER_TYPE_NOT_ALLOWED      ``order_types`` is set and does not hold the order's type
OUTSIDE_TRADING_WINDOW      ``trading_windows`` is set and none holds the current time
NO_REFERENCE_PRICE          the venue has no price for the symbol (fail closed)
MAX_ORDER_QUANTITY          quantity > ``max_order_quantity``
MAX_ORDER_NOTIONAL          quantity × price > ``max_order_notional`` (market orders at the touch)
PRICE_BAND                  a limit price further than ``price_band_pct`` % or ``price_band_ticks``
                            ticks from the last price
REDUCE_ONLY                 REDUCING state or ``reduce_only``, and the order does not shrink the position
MAX_DAILY_LOSS              today's realised loss is past ``max_daily_loss`` (reducing orders pass)
MAX_OPEN_ORDERS             open orders + 1 > ``max_open_orders``
MAX_POSITION                the position, with every open order on the same side filled, > ``max_position``
MAX_DAILY_NOTIONAL          filled today + reserved by open orders + this order > ``max_daily_notional``
ORDER_TO_TRADE_RATIO        (orders today + 1) / max(trades today, 1) > ``max_order_to_trade_ratio``
ORDER_RATE / CANCEL_RATE    more than ``orders_per_second`` / ``cancels_per_second`` (token bucket)
==========================  =========================================================

The instrument's own rules (tick, lot, minimum notional) are checked here as well, before any
reservation, and answered like the venue would: ``ORDER_REJECTED`` with ``LOT_SIZE``,
``TICK_SIZE``, ``MIN_NOTIONAL`` or ``UNKNOWN_SYMBOL``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from bastion.domain.orders import OrderRequest, OrderType, Side
from bastion.domain.policy import EffectivePolicy
from bastion.domain.trading import TradingState
from bastion.errors import ErrorCode
from bastion.ports import MarketData
from bastion.risk.book import (
    ZERO,
    ExposureBook,
    KeyFlow,
    Position,
    TrackedOrder,
    day_of,
)
from bastion.state.buckets import TokenBucket, new_bucket

_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Rejection:
    code: ErrorCode
    reason: str  # public, machine-readable
    detail: str  # for the ledger


def _risk(reason: str, detail: str) -> Rejection:
    return Rejection(ErrorCode.RISK_REJECTED, reason, detail)


def is_reducing(position: Position, side: Side, quantity: Decimal) -> bool:
    """True when the order, with every open order on its side filled too, only shrinks the position."""
    if side is Side.SELL:
        return position.quantity > ZERO and position.open_sell + quantity <= position.quantity
    return position.quantity < ZERO and position.open_buy + quantity <= -position.quantity


def _bucket(current: TokenBucket | None, rate: Decimal, now: float) -> TokenBucket:
    if current is None or current.rate != float(rate):
        return new_bucket(rate, now)
    return current


class RiskEngine:
    def __init__(self, book: ExposureBook, market: MarketData) -> None:
        self.book = book
        self._market = market

    def place(
        self,
        key_id: str,
        account: str,
        policy: EffectivePolicy,
        state: TradingState,
        request: OrderRequest,
        now: datetime,
    ) -> TrackedOrder | Rejection:
        """Check one new order; on success its capacity is reserved and returned."""
        if state is TradingState.HALTED:
            return _risk("TRADING_HALTED", "trading is halted")
        symbol = request.symbol
        instrument = self._market.instrument(symbol)
        if instrument is None:
            return Rejection(ErrorCode.ORDER_REJECTED, "UNKNOWN_SYMBOL", f"no instrument {symbol}")
        if policy.symbols is not None and symbol not in policy.symbols:
            return _risk("SYMBOL_NOT_ALLOWED", f"{symbol} is not in the policy's symbols")
        if policy.sides is not None and request.side not in policy.sides:
            return _risk("SIDE_NOT_ALLOWED", f"side {request.side.value} is not allowed")
        if policy.order_types is not None and request.type not in policy.order_types:
            return _risk("ORDER_TYPE_NOT_ALLOWED", f"type {request.type.value} is not allowed")
        if not policy.in_window(now):
            return _risk("OUTSIDE_TRADING_WINDOW", f"{now.strftime('%a %H:%M')} UTC is outside every window")
        quote = self._market.quote(symbol)
        if quote is None:
            return _risk("NO_REFERENCE_PRICE", f"no reference price for {symbol}")
        side = request.side
        quantity = request.quantity
        touch = quote.ask if side is Side.BUY else quote.bid
        price = request.price if request.type is OrderType.LIMIT and request.price is not None else None
        unit = price if price is not None else touch
        rule = instrument.check(quantity, price, touch)
        if rule is not None:
            return Rejection(ErrorCode.ORDER_REJECTED, rule, f"instrument rule {rule}")
        if policy.max_order_quantity is not None and quantity > policy.max_order_quantity:
            return _risk("MAX_ORDER_QUANTITY", f"quantity {quantity} > {policy.max_order_quantity}")
        notional = quantity * unit
        if policy.max_order_notional is not None and notional > policy.max_order_notional:
            return _risk("MAX_ORDER_NOTIONAL", f"notional {notional} > {policy.max_order_notional}")
        if price is not None:
            distance = abs(price - quote.last)
            if policy.price_band_pct is not None and distance * _HUNDRED > policy.price_band_pct * quote.last:
                return _risk(
                    "PRICE_BAND", f"price {price} is more than {policy.price_band_pct}% from {quote.last}"
                )
            if (
                policy.price_band_ticks is not None
                and distance > policy.price_band_ticks * instrument.tick_size
            ):
                return _risk(
                    "PRICE_BAND",
                    f"price {price} is more than {policy.price_band_ticks} ticks from {quote.last}",
                )
        book = self.book
        position = book.position(account, symbol)
        reducing = is_reducing(position, side, quantity)
        if (state is TradingState.REDUCING or policy.reduce_only) and not reducing:
            return _risk(
                "REDUCE_ONLY",
                f"position {position.quantity}: a {side.value} of {quantity} does not reduce it",
            )
        today = day_of(now)
        if policy.max_daily_loss is not None and not reducing:
            realised = book.account_day(account, today).realised.get(instrument.quote, ZERO)
            if -realised > policy.max_daily_loss:
                return _risk("MAX_DAILY_LOSS", f"realised today {realised} {instrument.quote}")
        flow = book.flow(key_id, today)
        rejection = self._flow_limits(policy, flow, position, side, quantity, notional)
        if rejection is not None:
            return rejection
        stamp = now.timestamp()
        if policy.orders_per_second is not None:
            flow.order_bucket = _bucket(flow.order_bucket, policy.orders_per_second, stamp)
            if not flow.order_bucket.available(stamp):
                return _risk("ORDER_RATE", f"more than {policy.orders_per_second} orders per second")
            flow.order_bucket.take(stamp)
        return book.reserve(key_id, account, instrument.quote, request, unit, now)

    @staticmethod
    def _flow_limits(
        policy: EffectivePolicy,
        flow: KeyFlow,
        position: Position,
        side: Side,
        quantity: Decimal,
        notional: Decimal,
    ) -> Rejection | None:
        if policy.max_open_orders is not None and flow.open_orders + 1 > policy.max_open_orders:
            return _risk("MAX_OPEN_ORDERS", f"{flow.open_orders} open, limit {policy.max_open_orders}")
        if policy.max_position is not None:
            if side is Side.BUY:
                worst = position.quantity + position.open_buy + quantity
            else:
                worst = position.open_sell + quantity - position.quantity
            if worst > policy.max_position:
                return _risk("MAX_POSITION", f"worst-case position {worst} > {policy.max_position}")
        if policy.max_daily_notional is not None:
            total = flow.filled_notional + flow.reserved_notional + notional
            if total > policy.max_daily_notional:
                return _risk("MAX_DAILY_NOTIONAL", f"daily notional {total} > {policy.max_daily_notional}")
        ratio = policy.max_order_to_trade_ratio
        if ratio is not None and Decimal(flow.orders + 1) > ratio * max(flow.trades, 1):
            return _risk(
                "ORDER_TO_TRADE_RATIO", f"{flow.orders + 1} orders to {flow.trades} trades > {ratio}"
            )
        return None

    def cancel(self, key_id: str, policy: EffectivePolicy, now: datetime) -> Rejection | None:
        """Cancels pass in every trading state; only the key's cancel rate limits them."""
        if policy.cancels_per_second is None:
            return None
        flow = self.book.flow(key_id, day_of(now))
        stamp = now.timestamp()
        flow.cancel_bucket = _bucket(flow.cancel_bucket, policy.cancels_per_second, stamp)
        if not flow.cancel_bucket.available(stamp):
            return _risk("CANCEL_RATE", f"more than {policy.cancels_per_second} cancels per second")
        flow.cancel_bucket.take(stamp)
        return None
