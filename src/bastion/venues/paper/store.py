"""Persistence port of the paper venue, with its in-memory implementation."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from bastion.venues.paper.engine import PaperOrder

Balances = Mapping[str, tuple[Decimal, Decimal]]


@dataclass(frozen=True, slots=True)
class AccountState:
    balances: dict[str, tuple[Decimal, Decimal]]
    orders: list[PaperOrder]


class PaperStore(Protocol):
    async def accounts(self) -> list[str]: ...

    async def load(self, account: str) -> AccountState | None: ...

    async def max_sequence(self) -> int: ...

    async def save(self, balances: Mapping[str, Balances], orders: Sequence[PaperOrder]) -> None:
        """Write the given accounts' balances and the given orders, atomically."""
        ...


class MemoryPaperStore:
    def __init__(self) -> None:
        self._balances: dict[str, dict[str, tuple[Decimal, Decimal]]] = {}
        self._orders: dict[str, PaperOrder] = {}

    async def accounts(self) -> list[str]:
        return sorted(self._balances)

    async def load(self, account: str) -> AccountState | None:
        if account not in self._balances:
            return None
        orders = [copy.deepcopy(o) for o in self._orders.values() if o.account == account]
        return AccountState(dict(self._balances[account]), orders)

    async def max_sequence(self) -> int:
        return max((int(i[1:]) for i in self._orders), default=0)

    async def save(self, balances: Mapping[str, Balances], orders: Sequence[PaperOrder]) -> None:
        for account, values in balances.items():
            self._balances[account] = dict(values)
        for order in orders:
            self._orders[order.venue_order_id] = copy.deepcopy(order)
