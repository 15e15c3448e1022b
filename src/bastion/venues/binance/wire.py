"""Binance spot REST answers, parsed into strict structs and turned into domain types here,
at the adapter boundary, or refused.

Field names as the venue documents them (``/api/v3/exchangeInfo``, ``/api/v3/ticker/24hr``,
``/api/v3/order``, ``/api/v3/openOrders``, ``/api/v3/account`` and the ``{"code", "msg"}``
error object).  Fields the venue adds later are ignored; a field Bastion relies on that is
missing, of the wrong type, too long, or inconsistent with what was asked is an
:class:`AnswerInvalid`, a :class:`~bastion.errors.VenueError`: the call fails closed, with a
short reason of Bastion's own (never the venue's text, which could carry anything).

What "consistent" means for an order answer (:func:`check_placed`): the same symbol, side,
type, client order id and quantity (and limit price) that were sent; executed quantity within
the order's; fills that add up to the executed quantity and its quote amount; no fill of a
limit order at a price worse than its limit.  A venue that says otherwise is either broken or
hostile, and Bastion records the order as unconfirmed rather than believe it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, TypeVar

import msgspec

from bastion.domain.instruments import AssetClass, Instrument
from bastion.domain.money import ZERO, DecimalFormatError, parse_decimal
from bastion.domain.orders import (
    Balance,
    Fill,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    Ticker,
    TimeInForce,
    VenueOrder,
)
from bastion.errors import VenueError

_ASSET_RE = re.compile(r"[A-Z0-9]{1,12}")
_WIRE_SYMBOL_RE = re.compile(r"[A-Z0-9]{2,24}")
_ORDER_NUMBER_RE = re.compile(r"[0-9]{1,19}")  # ASCII digits (str.isdigit() takes others too)
_MAX_INT = 2**63 - 1
# Milliseconds since the epoch: 2000-01-01 .. 2100-01-01.
_MIN_MS, _MAX_MS = 946_684_800_000, 4_102_444_800_000

Text = Annotated[str, msgspec.Meta(max_length=64)]
Number = Annotated[str, msgspec.Meta(max_length=48)]
OrderId = Annotated[int, msgspec.Meta(ge=0, le=_MAX_INT)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=_MAX_INT)]
T = TypeVar("T")


class AnswerInvalid(VenueError):
    """The venue answered outside its contract (``reason`` is Bastion's short code)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WireFilter(msgspec.Struct, rename="camel", frozen=True):
    filter_type: Text
    tick_size: Number | None = None
    step_size: Number | None = None
    min_notional: Number | None = None


class WireSymbol(msgspec.Struct, rename="camel", frozen=True):
    symbol: Text
    status: Text
    base_asset: Text
    quote_asset: Text
    filters: Annotated[list[WireFilter], msgspec.Meta(max_length=64)]


class WireExchangeInfo(msgspec.Struct, frozen=True):
    symbols: Annotated[list[WireSymbol], msgspec.Meta(max_length=10_000)]


class WireTicker(msgspec.Struct, rename="camel", frozen=True):
    symbol: Text
    bid_price: Number
    ask_price: Number
    last_price: Number
    quote_volume: Number


class WireFill(msgspec.Struct, frozen=True):
    price: Number
    qty: Number


class WireOrder(msgspec.Struct, rename="camel", frozen=True):
    symbol: Text
    order_id: OrderId
    client_order_id: Text
    price: Number
    orig_qty: Number
    executed_qty: Number
    cummulative_quote_qty: Number  # the venue's spelling
    status: Text
    time_in_force: Text
    type: Text
    side: Text
    orig_client_order_id: Text | None = None  # a cancel's answer: the order's own id is here
    transact_time: Millis | None = None
    time: Millis | None = None
    update_time: Millis | None = None
    fills: Annotated[list[WireFill], msgspec.Meta(max_length=1000)] = []


class WireBalance(msgspec.Struct, frozen=True):
    asset: Text
    free: Number
    locked: Number


class WireAccount(msgspec.Struct, frozen=True):
    balances: Annotated[list[WireBalance], msgspec.Meta(max_length=10_000)]


class WireError(msgspec.Struct, frozen=True):
    code: Annotated[int, msgspec.Meta(ge=-100_000, le=100_000)]
    msg: Annotated[str, msgspec.Meta(max_length=1024)] = ""


_SIDES = {"BUY": Side.BUY, "SELL": Side.SELL}
_TYPES = {"LIMIT": OrderType.LIMIT, "MARKET": OrderType.MARKET}
_TIFS = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK}
_STATUSES = {
    "NEW": OrderStatus.NEW,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,  # self-trade prevention expired it
}
WIRE_SIDES = {v: k for k, v in _SIDES.items()}
WIRE_TYPES = {v: k for k, v in _TYPES.items()}
WIRE_TIFS = {v: k for k, v in _TIFS.items()}


def decode(raw: bytes, into: type[T]) -> T:
    """``raw`` as ``into`` or :class:`AnswerInvalid` (``VENUE_ANSWER_MALFORMED``)."""
    try:
        return msgspec.json.decode(raw, type=into)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raise AnswerInvalid("VENUE_ANSWER_MALFORMED") from None


def _number(text: str) -> Decimal:
    try:
        return parse_decimal(text)
    except DecimalFormatError:
        raise AnswerInvalid("VENUE_NUMBER_INVALID") from None


def _positive(text: str) -> Decimal:
    value = _number(text)
    if value <= ZERO:
        raise AnswerInvalid("VENUE_NUMBER_INVALID")
    return value


def _time(ms: int | None, fallback: datetime) -> datetime:
    if ms is None:
        return fallback
    if not _MIN_MS <= ms <= _MAX_MS:
        raise AnswerInvalid("VENUE_TIME_INVALID")
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def domain_symbol(base: str, quote: str) -> str:
    return f"{base}-{quote}"


def instruments_from(info: WireExchangeInfo, wanted: frozenset[str]) -> dict[str, Instrument]:
    """The wanted symbols that trade, as instruments, keyed by the venue's symbol.  A symbol
    whose rules cannot be read is left out (orders for it are then refused as unknown)."""
    found: dict[str, Instrument] = {}
    for entry in info.symbols:
        if entry.symbol not in wanted or entry.status != "TRADING":
            continue
        if not (_ASSET_RE.fullmatch(entry.base_asset) and _ASSET_RE.fullmatch(entry.quote_asset)):
            continue
        rules = {f.filter_type: f for f in entry.filters}
        price, lot = rules.get("PRICE_FILTER"), rules.get("LOT_SIZE")
        notional = rules.get("NOTIONAL") or rules.get("MIN_NOTIONAL")
        try:
            if price is None or lot is None or price.tick_size is None or lot.step_size is None:
                continue
            minimum = _number(notional.min_notional) if notional and notional.min_notional else ZERO
            found[entry.symbol] = Instrument(
                symbol=domain_symbol(entry.base_asset, entry.quote_asset),
                base=entry.base_asset,
                quote=entry.quote_asset,
                asset_class=AssetClass.CRYPTO,
                tick_size=_positive(price.tick_size),
                lot_size=_positive(lot.step_size),
                min_notional=minimum,
            )
        except AnswerInvalid:
            continue
    return found


def ticker_from(wire: WireTicker, instrument: Instrument, now: datetime) -> tuple[Ticker, Decimal]:
    """A quote (stamped with *our* clock: a venue's timestamp could be anything) and the
    24-hour quote volume.  A crossed, zero or unreadable book is refused."""
    bid, ask, last = _positive(wire.bid_price), _positive(wire.ask_price), _positive(wire.last_price)
    if bid > ask:
        raise AnswerInvalid("VENUE_BOOK_CROSSED")
    return Ticker(instrument.symbol, bid, ask, last, now), _number(wire.quote_volume)


def order_from(wire: WireOrder, instrument: Instrument, now: datetime) -> VenueOrder:
    """A venue order in domain terms; ``venue_order_id`` is ``SYMBOL:orderId`` (the venue
    needs the symbol to look an order up again)."""
    if not _WIRE_SYMBOL_RE.fullmatch(wire.symbol):
        raise AnswerInvalid("VENUE_SYMBOL_INVALID")
    side, kind = _SIDES.get(wire.side), _TYPES.get(wire.type)
    tif, status = _TIFS.get(wire.time_in_force), _STATUSES.get(wire.status)
    if side is None or kind is None or tif is None or status is None:
        raise AnswerInvalid("VENUE_ENUM_INVALID")
    quantity, executed = _positive(wire.orig_qty), _number(wire.executed_qty)
    quote_amount = _number(wire.cummulative_quote_qty)
    price = _number(wire.price)
    if executed > quantity:
        raise AnswerInvalid("VENUE_OVERFILLED")
    if status is OrderStatus.FILLED and executed != quantity:
        raise AnswerInvalid("VENUE_STATUS_INCONSISTENT")
    if status is OrderStatus.NEW and executed != ZERO:
        raise AnswerInvalid("VENUE_STATUS_INCONSISTENT")
    if (executed == ZERO) != (quote_amount == ZERO):
        raise AnswerInvalid("VENUE_STATUS_INCONSISTENT")
    created = _time(wire.transact_time or wire.time, now)
    updated = _time(wire.update_time or wire.transact_time or wire.time, now)
    fills = tuple(Fill(_positive(f.price), _positive(f.qty), updated) for f in wire.fills)
    if fills and sum((f.quantity for f in fills), ZERO) != executed:
        raise AnswerInvalid("VENUE_FILLS_INCONSISTENT")
    if kind is OrderType.LIMIT:
        if price <= ZERO:
            raise AnswerInvalid("VENUE_NUMBER_INVALID")
        buy = side is Side.BUY
        if any((f.price > price) if buy else (f.price < price) for f in fills):
            raise AnswerInvalid("VENUE_FILL_OUTSIDE_LIMIT")
    average = None
    if executed > ZERO:
        average = (quote_amount / executed).quantize(Decimal("1e-12")).normalize()
        if kind is OrderType.LIMIT and (average > price if side is Side.BUY else average < price):
            raise AnswerInvalid("VENUE_FILL_OUTSIDE_LIMIT")
    return VenueOrder(
        venue_order_id=f"{wire.symbol}:{wire.order_id}",
        client_order_id=wire.orig_client_order_id or wire.client_order_id,
        symbol=instrument.symbol,
        side=side,
        type=kind,
        time_in_force=tif,
        quantity=quantity,
        price=price if kind is OrderType.LIMIT else None,
        status=status,
        filled_quantity=executed,
        average_price=average,
        created_at=created,
        updated_at=updated,
        fills=fills,
    )


def check_placed(order: VenueOrder, request: OrderRequest) -> None:
    """Refuse an answer to a new order that is not about the order that was sent."""
    if (
        order.symbol != request.symbol
        or order.client_order_id != request.client_order_id
        or order.side is not request.side
        or order.type is not request.type
        or order.quantity != request.quantity
        or (request.type is OrderType.LIMIT and order.price != request.price)
    ):
        raise AnswerInvalid("VENUE_ANSWER_MISMATCH")


def check_same(order: VenueOrder, venue_order_id: str) -> None:
    """Refuse an answer about another order than the one asked about."""
    if order.venue_order_id != venue_order_id:
        raise AnswerInvalid("VENUE_ANSWER_MISMATCH")


def balances_from(account: WireAccount) -> list[Balance]:
    out = []
    for entry in account.balances:
        if not _ASSET_RE.fullmatch(entry.asset):
            raise AnswerInvalid("VENUE_ASSET_INVALID")
        free, locked = _number(entry.free), _number(entry.locked)
        if free or locked:
            out.append(Balance(entry.asset, free, locked))
    return sorted(out, key=lambda b: b.asset)


def split_venue_order_id(venue_order_id: str) -> tuple[str, str]:
    """``SYMBOL:orderId`` → (symbol, orderId), or :class:`AnswerInvalid` for anything else."""
    symbol, sep, number = venue_order_id.partition(":")
    if not sep or not _WIRE_SYMBOL_RE.fullmatch(symbol) or not _ORDER_NUMBER_RE.fullmatch(number):
        raise AnswerInvalid("VENUE_ORDER_ID_INVALID")
    return symbol, number
