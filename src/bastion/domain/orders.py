"""Orders, fills, balances and quotes: the venue-neutral trading model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from bastion.domain.money import format_decimal


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(StrEnum):
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a bot asks for.  Validated for shape by the firewall, for rules by the venue."""

    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None
    time_in_force: TimeInForce
    # Free text for the bot's own bookkeeping (a strategy name); not an economic parameter.
    label: str | None = None

    def fingerprint(self) -> str:
        """A digest of the economic parameters: equal for a retry, different for a changed order
        (the label is not one of them)."""
        parts = (
            self.client_order_id,
            self.symbol,
            self.side.value,
            self.type.value,
            format_decimal(self.quantity),
            "" if self.price is None else format_decimal(self.price),
            self.time_in_force.value,
        )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Fill:
    price: Decimal
    quantity: Decimal
    time: datetime


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order as the venue reports it."""

    venue_order_id: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    price: Decimal | None
    status: OrderStatus
    filled_quantity: Decimal
    average_price: Decimal | None
    created_at: datetime
    updated_at: datetime
    fills: tuple[Fill, ...] = ()


@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    free: Decimal
    locked: Decimal


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    time: datetime
