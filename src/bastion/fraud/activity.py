"""Per-key behaviour: recent orders, baselines, spoofing windows, denials; owners' resting orders.

Everything here is in memory and per process (like the risk stage's reservations; see
docs/architecture.md).  Times are epoch seconds handed in by the caller.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from bastion.domain.orders import OrderType, Side

EWMA_ALPHA = 0.05  # how fast a key's rate and notional baselines follow it
CANCEL_ALPHA = 0.02  # how fast its fast-cancel baseline follows it
MAX_GAP_SECONDS = 3_600.0  # a pause longer than this counts as this long in the baseline


def _trim(times: deque[float], since: float) -> None:
    while times and times[0] < since:
        times.popleft()


@dataclass(slots=True)
class SymbolWindow:
    """One key's orders in one symbol over the spoofing window."""

    placed: deque[float] = field(default_factory=deque)
    closed: deque[tuple[float, bool, bool]] = field(default_factory=deque)  # (time, unfilled, fast)
    trades: deque[float] = field(default_factory=deque)
    cancels: deque[float] = field(default_factory=deque)
    orders_ever: int = 0

    def trim(self, since: float) -> None:
        _trim(self.placed, since)
        _trim(self.trades, since)
        _trim(self.cancels, since)
        while self.closed and self.closed[0][0] < since:
            self.closed.popleft()

    @property
    def fast_cancels(self) -> int:
        return sum(1 for _, _, fast in self.closed if fast)

    @property
    def unfilled(self) -> int:
        return sum(1 for _, unfilled, _ in self.closed if unfilled)


@dataclass(slots=True)
class KeyActivity:
    """What one key has done: its recent orders and its own baselines."""

    orders: int = 0  # orders judged by the fraud stage in this process
    last_order_at: float | None = None
    mean_gap: float | None = None  # EWMA of the time between its orders
    mean_notional: float | None = None  # EWMA of its orders' notional (float: a baseline, not money)
    recent: deque[tuple[float, float]] = field(default_factory=deque)  # (time, notional) in the burst window
    symbols: dict[str, SymbolWindow] = field(default_factory=dict)
    closed_orders: int = 0
    fast_cancel_rate: float = 0.0  # EWMA of "this closed order was a fast cancel"
    denials: deque[float] = field(default_factory=deque)

    def window(self, symbol: str) -> SymbolWindow:
        found = self.symbols.get(symbol)
        if found is None:
            found = self.symbols[symbol] = SymbolWindow()
        return found

    def burst(self, now: float, window: float) -> tuple[int, float]:
        """(orders, notional) in the burst window, before the order being judged."""
        while self.recent and self.recent[0][0] < now - window:
            self.recent.popleft()
        return len(self.recent), sum(n for _, n in self.recent)

    def record_order(self, now: float, symbol: str, notional: float) -> None:
        if self.last_order_at is not None:
            gap = min(max(now - self.last_order_at, 0.0), MAX_GAP_SECONDS)
            self.mean_gap = (
                gap if self.mean_gap is None else self.mean_gap + EWMA_ALPHA * (gap - self.mean_gap)
            )
        self.last_order_at = now
        if self.mean_notional is None:
            self.mean_notional = notional
        else:
            self.mean_notional += EWMA_ALPHA * (notional - self.mean_notional)
        self.orders += 1
        self.recent.append((now, notional))
        sym = self.window(symbol)
        sym.placed.append(now)
        sym.orders_ever += 1

    def record_close(self, now: float, symbol: str, *, unfilled: bool, fast: bool, canceled: bool) -> None:
        sym = self.window(symbol)
        sym.closed.append((now, unfilled, fast))
        if canceled:
            sym.cancels.append(now)
        self.closed_orders += 1
        self.fast_cancel_rate += CANCEL_ALPHA * ((1.0 if fast else 0.0) - self.fast_cancel_rate)

    def record_trade(self, now: float, symbol: str) -> None:
        self.window(symbol).trades.append(now)

    def record_denial(self, now: float, window: float) -> int:
        self.denials.append(now)
        _trim(self.denials, now - window)
        return len(self.denials)

    def recent_denials(self, now: float, window: float) -> int:
        _trim(self.denials, now - window)
        return len(self.denials)


@dataclass(frozen=True, slots=True)
class Resting:
    """An order that rests (or may rest) at the venue, for self-match prevention."""

    account: str
    client_order_id: str
    side: Side
    price: Decimal | None  # None: a market order in flight, which crosses everything
    type: OrderType


class OwnerBook:
    """Each owner's resting orders per symbol: an order that would trade against another of the
    same owner's orders (another account's, or the same account's) is a self-match."""

    def __init__(self) -> None:
        self._book: dict[tuple[str, str], dict[tuple[str, str], Resting]] = {}

    def crossing(self, owner: str, symbol: str, side: Side, price: Decimal | None) -> Resting | None:
        """A resting order of ``owner`` that an order (side, price) would trade against."""
        for resting in self._book.get((owner, symbol), {}).values():
            if resting.side is side:
                continue
            if price is None or resting.price is None:
                return resting
            if (side is Side.BUY and price >= resting.price) or (
                side is Side.SELL and price <= resting.price
            ):
                return resting
        return None

    def add(self, owner: str, symbol: str, order: Resting) -> None:
        self._book.setdefault((owner, symbol), {})[(order.account, order.client_order_id)] = order

    def remove(self, owner: str, symbol: str, account: str, client_order_id: str) -> None:
        orders = self._book.get((owner, symbol))
        if orders is not None:
            orders.pop((account, client_order_id), None)
            if not orders:
                del self._book[(owner, symbol)]

    def __len__(self) -> int:
        return sum(len(v) for v in self._book.values())
