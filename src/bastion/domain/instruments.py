"""Instruments and their trading rules."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from bastion.domain.money import ZERO, is_multiple


class AssetClass(StrEnum):
    CRYPTO = "crypto"
    FOREX = "forex"
    STOCK = "stock"


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    base: str
    quote: str
    asset_class: AssetClass
    tick_size: Decimal
    lot_size: Decimal
    min_notional: Decimal

    def __post_init__(self) -> None:
        if self.tick_size <= ZERO or self.lot_size <= ZERO or self.min_notional < ZERO:
            raise ValueError(f"{self.symbol}: tick, lot and minimum notional must be positive")

    def check(self, quantity: Decimal, price: Decimal | None, reference: Decimal) -> str | None:
        """The first instrument rule an order breaks, as a reason code, or None."""
        if quantity <= ZERO or not is_multiple(quantity, self.lot_size):
            return "LOT_SIZE"
        if price is not None and (price <= ZERO or not is_multiple(price, self.tick_size)):
            return "TICK_SIZE"
        notional = quantity * (price if price is not None else reference)
        if notional < self.min_notional:
            return "MIN_NOTIONAL"
        return None
