"""Per-key behaviour: recent orders, baselines, spoofing windows, denials; owners' resting orders.

Everything here is in memory and per process (like the risk stage's reservations; see
docs/architecture.md).  Times are epoch seconds handed in by the caller.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from bastion.domain.orders import OrderType, Side

EWMA_ALPHA = 0.05  # how fast a key's rate and notional baselines follow it
PEAK_DECAY = 0.999  # per clean order: how slowly a key's usual peak forgets a busy moment
SWEEP_EVERY = 1_000  # orders between sweeps of emptied repeat trackers
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
    # Counts over ``closed``, kept as it changes (a busy key has thousands of orders in a window).
    fast_cancels: int = 0
    unfilled: int = 0

    def trim(self, since: float) -> None:
        _trim(self.placed, since)
        _trim(self.trades, since)
        _trim(self.cancels, since)
        closed = self.closed
        while closed and closed[0][0] < since:
            _, unfilled, fast = closed.popleft()
            self.unfilled -= unfilled
            self.fast_cancels -= fast

    def close(self, now: float, *, unfilled: bool, fast: bool) -> None:
        self.closed.append((now, unfilled, fast))
        self.unfilled += unfilled
        self.fast_cancels += fast


@dataclass(slots=True)
class KeyActivity:
    """What one key has done: its recent orders and its own baselines."""

    orders: int = 0  # orders judged by the fraud stage in this process
    last_order_at: float | None = None
    mean_gap: float | None = None  # EWMA of the time between its orders
    mean_notional: float | None = None  # EWMA of its orders' notional (float: a baseline, not money)
    recent: deque[tuple[float, float]] = field(default_factory=deque)  # (time, notional) in the burst window
    recent_notional: float = 0.0  # the sum over ``recent``
    symbols: dict[str, SymbolWindow] = field(default_factory=dict)
    closed_orders: int = 0
    fast_cancel_rate: float = 0.0  # EWMA of "this closed order was a fast cancel"
    denials: deque[float] = field(default_factory=deque)
    # The most orders the key usually sends in one burst window (learned from orders that
    # raised nothing, decaying slowly): a grid's ladder is its normal, a loop is not.
    usual_peak: float = 0.0
    peak_pending: int = 0  # the busiest count of the window being watched, not yet usual
    peak_started: float | None = None
    # Identical orders (symbol, side, type, price, quantity) in the burst window, by client
    # order id; a cancelled one leaves (a market maker re-quoting the same price is not a loop).
    repeats: dict[tuple[object, ...], dict[str, float]] = field(default_factory=dict)
    noted: int = 0

    def window(self, symbol: str) -> SymbolWindow:
        found = self.symbols.get(symbol)
        if found is None:
            found = self.symbols[symbol] = SymbolWindow()
        return found

    def burst(self, now: float, window: float) -> tuple[int, float]:
        """(orders, notional) in the burst window, before the order being judged."""
        recent = self.recent
        while recent and recent[0][0] < now - window:
            self.recent_notional -= recent.popleft()[1]
        if not recent:
            self.recent_notional = 0.0  # no drift left over from the float sums
        return len(recent), self.recent_notional

    def note(self, now: float, signature: tuple[object, ...], client_order_id: str, notional: float) -> None:
        """An order judged by the stage, whatever the action: into the burst window and the
        repeat tracker (held and refused orders count too, so a loop cannot wait its way in)."""
        self.recent.append((now, notional))
        self.recent_notional += notional
        seen = self.repeats.setdefault(signature, {})
        seen.pop(client_order_id, None)  # kept in time order: a re-noted id moves to the end
        seen[client_order_id] = now
        self.noted += 1
        if self.noted % SWEEP_EVERY == 0:
            self.repeats = {k: v for k, v in self.repeats.items() if v}

    def repeated(self, signature: tuple[object, ...], now: float, window: float) -> int:
        """Identical orders in the window, before the one being judged."""
        seen = self.repeats.get(signature)
        if not seen:
            return 0
        cutoff = now - window
        expired = []
        for client_order_id, at in seen.items():  # oldest first: stop at the first one still in
            if at >= cutoff:
                break
            expired.append(client_order_id)
        for client_order_id in expired:
            del seen[client_order_id]
        return len(seen)

    def forget_repeat(self, signature: tuple[object, ...], client_order_id: str) -> None:
        seen = self.repeats.get(signature)
        if seen is not None:
            seen.pop(client_order_id, None)

    def learn_peak(self, count: int, now: float, window: float) -> None:
        """A clean order's burst-window count.  The key's usual peak takes it in only once
        the window it belongs to has passed: during a burst the burst is judged against what
        was usual before it (a runaway ladder cannot teach itself to be normal)."""
        if self.peak_started is None or now - self.peak_started > window:
            self.usual_peak = max(float(self.peak_pending), self.usual_peak * PEAK_DECAY)
            self.peak_started = now
            self.peak_pending = count
        else:
            self.peak_pending = max(self.peak_pending, count)

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
        sym = self.window(symbol)
        sym.placed.append(now)
        sym.orders_ever += 1

    def record_close(self, now: float, symbol: str, *, unfilled: bool, fast: bool, canceled: bool) -> None:
        sym = self.window(symbol)
        sym.close(now, unfilled=unfilled, fast=fast)
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


class _Side:
    """One side of an owner's resting orders in a symbol: a heap, best first, with lazy removal."""

    __slots__ = ("heap", "live", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign  # 1: sells (lowest first); -1: buys (highest first)
        self.heap: list[tuple[Decimal, str, str]] = []
        self.live: dict[tuple[str, str], Resting] = {}

    def add(self, order: Resting) -> None:
        if order.price is None:
            raise ValueError("only limit orders rest in an owner's book")
        key = (order.account, order.client_order_id)
        self.live[key] = order
        heapq.heappush(self.heap, (order.price * self.sign, *key))

    def best(self) -> Resting | None:
        heap, live = self.heap, self.live
        while heap:
            signed, account, client_order_id = heap[0]
            found = live.get((account, client_order_id))
            if found is not None and found.price is not None and found.price * self.sign == signed:
                return found
            heapq.heappop(heap)  # removed (or re-added at another price) since it was pushed
        return None


class OwnerBook:
    """Each owner's resting orders per symbol: an order that would trade against another of the
    same owner's orders (another account's, or the same account's) is a self-match.  Only the
    best resting order of the other side needs looking at, so a check costs the same however
    many orders rest."""

    def __init__(self) -> None:
        self._book: dict[tuple[str, str], tuple[_Side, _Side]] = {}  # (owner, symbol) -> (buys, sells)

    def crossing(self, owner: str, symbol: str, side: Side, price: Decimal | None) -> Resting | None:
        """A resting order of ``owner`` that an order (side, price) would trade against."""
        sides = self._book.get((owner, symbol))
        if sides is None:
            return None
        best = (sides[1] if side is Side.BUY else sides[0]).best()
        if best is None or best.price is None:
            return best
        if price is None:
            return best
        if (side is Side.BUY and price >= best.price) or (side is Side.SELL and price <= best.price):
            return best
        return None

    def add(self, owner: str, symbol: str, order: Resting) -> None:
        self.remove(owner, symbol, order.account, order.client_order_id)  # re-added: its new price counts
        sides = self._book.get((owner, symbol))
        if sides is None:
            sides = self._book[(owner, symbol)] = (_Side(-1), _Side(1))
        (sides[0] if order.side is Side.BUY else sides[1]).add(order)

    def remove(self, owner: str, symbol: str, account: str, client_order_id: str) -> None:
        sides = self._book.get((owner, symbol))
        if sides is None:
            return
        for one in sides:
            one.live.pop((account, client_order_id), None)
        if not sides[0].live and not sides[1].live:
            del self._book[(owner, symbol)]

    def __len__(self) -> int:
        return sum(len(b.live) + len(s.live) for b, s in self._book.values())
