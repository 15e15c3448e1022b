"""The fraud rules: each a pure function of what is known, with a reason code and points.

Thresholds come from :class:`bastion.config.FraudSettings`; docs/fraud.md explains each rule
and where its defaults come from (Binance's published quantitative rules use ratios of 0.99
over 10-minute windows; MiFID II RTS 9 defines the order-to-trade ratio; CME and Binance
offer self-match prevention).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from bastion.config import FraudSettings
from bastion.domain.orders import OrderType, Side
from bastion.fraud.activity import KeyActivity, SymbolWindow
from bastion.fraud.networks import KeyOrigin, Sightings

NEW_NETWORK = "new_network"
NEW_ADDRESS = "new_address"
ILLIQUID = "illiquid_symbol"
PRICE = "price_deviation"
BURST_RATE = "burst_rate"
BURST_NOTIONAL = "burst_notional"
REPEAT = "repeated_order"
SIZE = "order_size"
SPOOFING = "spoofing"
UNFILLED = "unfilled_ratio"
ORDER_TO_TRADE = "order_to_trade"
PROBING = "probing"
SELF_MATCH = "self_match"
MODEL = "baseline_model"


@dataclass(frozen=True, slots=True)
class Signal:
    rule: str
    points: float
    reason: str


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """One order as the rules see it."""

    symbol: str
    side: Side
    type: OrderType
    price: Decimal | None
    notional: Decimal
    reference: Decimal  # the last price
    liquidity: Decimal | None  # a typical 24-hour volume in the quote currency, when the venue tells
    touch: Decimal | None = None  # the side a market order would take (ask for a buy, bid for a sell)
    quantity: Decimal | None = None

    @property
    def signature(self) -> tuple[object, ...]:
        """What makes two orders the same order sent twice."""
        return (self.symbol, self.side, self.type, self.price, self.quantity)

    @property
    def reach(self) -> Decimal | None:
        """The worst price the order can trade at: its limit, or the touch for a market order
        (which meets resting orders at the top of the book first).  None: anything."""
        return self.price if self.price is not None else self.touch

    @property
    def deviation_bps(self) -> float:
        """How far an aggressive price is beyond the reference (negative: passive side).  A
        market order is measured at the touch it takes first: in a thin market a thief has
        pumped, the ask itself stands far above the last trade."""
        price = self.reach
        if price is None or self.reference <= 0:
            return 0.0
        beyond = price - self.reference if self.side is Side.BUY else self.reference - price
        return float(beyond * 10_000 / self.reference)


def new_network(
    address: str,
    network: str,
    key: Sightings,
    account: Sightings,
    origin: KeyOrigin,
    now: datetime,
    s: FraudSettings,
) -> Signal | None:
    """A key used from a network it never used; more when the key is minutes old or rotated."""
    known_address, known_network = key.knows(address, network)
    if known_address:
        return None  # an address the key used is never new, whatever network it is filed under
    if known_network:
        return Signal(NEW_ADDRESS, s.new_address_points, "new address in a network the key used")
    if key.empty and (account.empty or network in account.networks):
        return None  # a key's first use, from where its account is known (or knows nothing yet)
    points = s.new_network_points
    # The reason names no address: it goes to the ledger in clear, and the client's address
    # there is sealed under its account's key (crypto-shredding); `bastion ledger show` opens it.
    reason = f"a network (/{network.rsplit('/', 1)[-1]}) never used by this key"
    if origin.created_at is not None and (now - origin.created_at).total_seconds() <= s.fresh_key_seconds:
        points += s.fresh_key_points
        reason += f", {int((now - origin.created_at).total_seconds())} s after its creation or rotation"
    return Signal(NEW_NETWORK, points, reason)


def illiquid_symbol(order: OrderFacts, window: SymbolWindow, s: FraudSettings) -> Signal | None:
    """One of a key's first orders in a thin market (where a thief dumps his own coins)."""
    if order.liquidity is None or order.liquidity >= Decimal(s.illiquid_below):
        return None
    if window.orders_ever >= s.illiquid_first_orders:
        return None
    return Signal(
        ILLIQUID,
        s.illiquid_points,
        f"order {window.orders_ever + 1} of this key in {order.symbol} (depth {order.liquidity} < "
        f"{s.illiquid_below})",
    )


def price_deviation(order: OrderFacts, s: FraudSettings) -> Signal | None:
    """An aggressive price far beyond the reference (fat finger, or buying a pump): a limit
    order's limit, a market order's touch."""
    bps = order.deviation_bps
    if bps >= s.price_far_bps:
        points = s.price_far_points
    elif bps >= s.price_alert_bps:
        points = s.price_alert_points
    else:
        return None
    return Signal(PRICE, points, f"{order.side.value} {bps:.0f} bps beyond the reference {order.reference}")


def bursts(activity: KeyActivity, order: OrderFacts, now: float, s: FraudSettings) -> list[Signal]:
    """A loop or a flood against the key's own habits:

    - the same order (symbol, side, type, price, quantity) ``repeat_orders`` times in the
      burst window, not cancelled in between: a ladder never repeats a price, a loop does;
    - more orders (or notional) in the window than ``burst_factor`` times the most the key
      usually sends in one (its usual peak, learned from orders that raised nothing);
    - one order far larger than the key's usual.
    """
    found: list[Signal] = []
    window = s.burst_window_seconds
    repeats = activity.repeated(order.signature, now, window) + 1
    if repeats >= s.repeat_orders:
        found.append(Signal(REPEAT, s.burst_points, f"the same order {repeats} times in {window:g} s"))
    if activity.orders < s.burst_warmup_orders or not activity.mean_notional:
        return found
    count, notional = activity.burst(now, window)
    count += 1
    this = float(order.notional)
    notional += this
    usual = max(activity.usual_peak, 1.0)
    if count >= s.burst_min_orders and count >= s.burst_factor * usual:
        found.append(
            Signal(BURST_RATE, s.burst_points, f"{count} orders in {window:g} s, usually {usual:.0f}")
        )
    elif count >= s.burst_min_orders and notional >= s.burst_factor * usual * activity.mean_notional:
        found.append(Signal(BURST_NOTIONAL, s.burst_points, f"notional {notional:.2f} in {window:g} s"))
    if this >= s.notional_factor * activity.mean_notional:
        found.append(
            Signal(
                SIZE, s.notional_points, f"notional {this:.2f} is {this / activity.mean_notional:.1f}x usual"
            )
        )
    return found


def spoofing(activity: KeyActivity, window: SymbolWindow, now: float, s: FraudSettings) -> list[Signal]:
    """Spoofing and layering per key and symbol: orders cancelled within seconds, unfilled
    ratios and the order-to-trade ratio over the window."""
    window.trim(now - s.spoof_window_seconds)
    found: list[Signal] = []
    fast = window.fast_cancels
    closed = len(window.closed)
    baseline = activity.fast_cancel_rate if activity.closed_orders >= s.burst_warmup_orders else 0.0
    if (
        fast >= s.spoof_min_fast_cancels
        and fast / max(closed, 1) >= s.spoof_fast_cancel_ratio
        and baseline < s.spoof_baseline_max
    ):
        found.append(
            Signal(
                SPOOFING,
                s.spoof_points,
                f"{fast} of {closed} orders cancelled within {s.fast_cancel_seconds:g} s",
            )
        )
    placed = len(window.placed)
    if placed >= s.ratio_min_orders:
        if closed >= s.ratio_min_orders and window.unfilled / closed >= s.unfilled_ratio:
            found.append(Signal(UNFILLED, s.ratio_points, f"{window.unfilled} of {closed} orders unfilled"))
        ratio = (placed + len(window.cancels)) / max(len(window.trades), 1)
        if ratio >= s.max_order_to_trade:
            found.append(Signal(ORDER_TO_TRADE, s.ratio_points, f"order-to-trade ratio {ratio:.0f}"))
    return found


def probing(activity: KeyActivity, now: float, s: FraudSettings) -> Signal | None:
    """A key refused again and again (other accounts' ids, limits, malformed orders)."""
    denials = activity.recent_denials(now, s.probe_window_seconds)
    if denials < s.probe_denials:
        return None
    return Signal(PROBING, s.probe_points, f"{denials} denials in {s.probe_window_seconds:g} s")


def model_points(score: float | None, s: FraudSettings) -> Signal | None:
    """The learned baseline's share: up to ``model_weight`` above ``model_threshold``."""
    if score is None or score < s.model_threshold:
        return None
    share = 1.0 if s.model_threshold >= 1 else (score - s.model_threshold) / (1 - s.model_threshold)
    points = round(s.model_weight * min(share, 1.0), 4)
    return Signal(MODEL, points, f"score {score:.3f}") if points > 0 else None
