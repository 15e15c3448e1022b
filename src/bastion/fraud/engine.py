"""Rules and the learned score combined into one action per request.

The points of every rule that fired, plus the model's share, give a total; the total picks
the action by the configured thresholds (``alert_at`` ≤ ``hold_at`` ≤ ``deny_at`` ≤
``halt_at``).  Two things are not a matter of points: a self-match is always refused, and a
cancel is never refused (cancelling lowers risk; its only effect is on the windows).  Reads
are never held (there is no order to confirm): they are allowed, alerted or denied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from bastion.config import FraudSettings
from bastion.domain.money import ZERO
from bastion.domain.orders import OrderRequest, OrderType, VenueOrder
from bastion.fraud import rules
from bastion.fraud.activity import KeyActivity, OwnerBook, Resting
from bastion.fraud.model import Baselines, Features, features
from bastion.fraud.networks import KeyOrigin, Sightings
from bastion.fraud.rules import OrderFacts, Signal


class Action(StrEnum):
    ALLOW = "allow"
    ALERT = "alert"
    HOLD = "hold"
    DENY = "deny"
    HALT = "halt"


class Kind(StrEnum):
    ORDER = "order"
    CANCEL = "cancel"
    READ = "read"


_RANK = {a: i for i, a in enumerate(Action)}


@dataclass(frozen=True, slots=True)
class Assessment:
    action: Action
    score: float
    signals: tuple[Signal, ...]
    model_score: float | None = None
    self_match: Resting | None = None
    features: Features | None = field(default=None, compare=False)

    @property
    def top(self) -> Signal | None:
        return max(self.signals, key=lambda s: s.points, default=None)

    def facts(self) -> dict[str, object]:
        """What the ledger keeps of the decision."""
        out: dict[str, object] = {"action": self.action.value, "score": round(self.score, 4)}
        if self.model_score is not None:
            out["model_score"] = round(self.model_score, 4)
        if self.signals:
            out["rules"] = [{"rule": s.rule, "points": s.points, "reason": s.reason} for s in self.signals]
        return out


def decide(total: float, kind: Kind, s: FraudSettings) -> Action:
    """The action for a total, by the thresholds, bounded by what the request is."""
    if total >= s.halt_at:
        action = Action.HALT
    elif total >= s.deny_at:
        action = Action.DENY
    elif total >= s.hold_at:
        action = Action.HOLD
    elif total >= s.alert_at:
        action = Action.ALERT
    else:
        action = Action.ALLOW
    if kind is Kind.CANCEL and _RANK[action] > _RANK[Action.ALERT]:
        return Action.ALERT
    if kind is Kind.READ and action is Action.HOLD:
        return Action.ALERT
    return action


@dataclass(slots=True)
class _Tracked:
    key_id: str
    owner: str
    symbol: str
    placed_at: float
    signature: tuple[object, ...] = ()
    filled: Decimal = Decimal(0)


def signature_of(request: OrderRequest) -> tuple[object, ...]:
    """The same tuple as :attr:`OrderFacts.signature` for this order."""
    price = request.price if request.type is OrderType.LIMIT else None
    return (request.symbol, request.side, request.type, price, request.quantity)


class FraudEngine:
    """Judges requests; learns from orders and from the venue's reports.  Synchronous and
    in memory: the stage hands in every fact, including the time."""

    def __init__(self, settings: FraudSettings, baselines: Baselines | None = None) -> None:
        self.settings = settings
        self.baselines = baselines or Baselines(settings.model_warmup_orders)
        self.owners = OwnerBook()
        self._activity: dict[str, KeyActivity] = {}
        self._orders: dict[tuple[str, str], _Tracked] = {}

    def activity(self, key_id: str) -> KeyActivity:
        found = self._activity.get(key_id)
        if found is None:
            found = self._activity[key_id] = KeyActivity()
        return found

    # -- judging ----------------------------------------------------------------------------
    def assess(
        self,
        *,
        kind: Kind,
        key_id: str,
        owner: str,
        address: str,
        network: str,
        key_seen: Sightings,
        account_seen: Sightings,
        origin: KeyOrigin,
        now: datetime,
        order: OrderFacts | None = None,
    ) -> Assessment:
        s = self.settings
        stamp = now.timestamp()
        activity = self.activity(key_id)
        signals: list[Signal] = []
        found = rules.new_network(address, network, key_seen, account_seen, origin, now, s)
        if found is not None:
            signals.append(found)
        found = rules.probing(activity, stamp, s)
        if found is not None:
            signals.append(found)
        if kind is not Kind.ORDER or order is None:
            total = sum(x.points for x in signals)
            return Assessment(decide(total, kind, s), total, tuple(signals))
        crossing = self.owners.crossing(owner, order.symbol, order.side, order.reach)
        window = activity.window(order.symbol)
        for check in (rules.illiquid_symbol(order, window, s), rules.price_deviation(order, s)):
            if check is not None:
                signals.append(check)
        signals += rules.bursts(activity, order, stamp, s)
        signals += rules.spoofing(activity, window, stamp, s)
        gap = None if activity.last_order_at is None else stamp - activity.last_order_at
        x = features(
            float(order.notional),
            activity.mean_notional,
            order.deviation_bps,
            gap,
            new_symbol=window.orders_ever == 0,
            buy=order.side.value == "buy",
            market=order.type is OrderType.MARKET,
        )
        score = self.baselines.score(key_id, x)
        found = rules.model_points(score, s)
        if found is not None:
            signals.append(found)
        total = sum(x.points for x in signals)
        if crossing is not None:
            signals.append(
                Signal(
                    rules.SELF_MATCH,
                    0.0,
                    f"would trade against {crossing.account}'s {crossing.client_order_id}",
                )
            )
            action = max(decide(total, kind, s), Action.DENY, key=_RANK.__getitem__)
            return Assessment(action, total, tuple(signals), score, crossing, x)
        return Assessment(decide(total, kind, s), total, tuple(signals), score, None, x)

    # -- learning ---------------------------------------------------------------------------
    def note_order(self, key_id: str, order: OrderFacts, client_order_id: str, now: datetime) -> None:
        """Every order judged, whatever the action: the burst window and the repeat tracker."""
        self.activity(key_id).note(now.timestamp(), order.signature, client_order_id, float(order.notional))

    def record_order(
        self,
        *,
        key_id: str,
        account: str,
        owner: str,
        request: OrderRequest,
        notional: Decimal,
        assessment: Assessment,
        now: datetime,
    ) -> None:
        """An order the stage let through: into the key's windows, the owner's book and the
        model's learning queue (not learned from when it raised an alert)."""
        stamp = now.timestamp()
        activity = self.activity(key_id)
        activity.record_order(stamp, request.symbol, float(notional))
        if not assessment.signals:  # a clean order teaches the key's usual peak
            window = self.settings.burst_window_seconds
            activity.learn_peak(activity.burst(stamp, window)[0], stamp, window)
        self._track(key_id, account, owner, request, stamp, ZERO)
        if assessment.features is not None and assessment.action is Action.ALLOW:
            self.baselines.learn_later(key_id, assessment.features)

    def restore_order(
        self,
        *,
        key_id: str,
        account: str,
        owner: str,
        request: OrderRequest,
        placed_at: datetime,
        filled: Decimal = ZERO,
    ) -> None:
        """An order stored open (or never confirmed) before this process started: tracked, and
        a limit order back in its owner's book, so self-match prevention sees what rests from
        before a restart.  Not learned from, and not counted in the key's windows again."""
        self._track(key_id, account, owner, request, placed_at.timestamp(), filled)

    def _track(
        self, key_id: str, account: str, owner: str, request: OrderRequest, placed_at: float, filled: Decimal
    ) -> None:
        """Tracked until the venue reports it closed; a limit order rests in its owner's book."""
        self._orders[(account, request.client_order_id)] = _Tracked(
            key_id, owner, request.symbol, placed_at, signature_of(request), filled
        )
        if request.type is OrderType.LIMIT:
            resting = Resting(account, request.client_order_id, request.side, request.price, request.type)
            self.owners.add(owner, request.symbol, resting)

    def tracks(self, account: str, client_order_id: str) -> bool:
        """Whether an order is in flight or open here (a request for it again is a retry)."""
        return (account, client_order_id) in self._orders

    def forget_order(self, account: str, client_order_id: str) -> None:
        """The order never reached the venue: out of the owner's book and the tracking."""
        tracked = self._orders.pop((account, client_order_id), None)
        if tracked is not None:
            self.owners.remove(tracked.owner, tracked.symbol, account, client_order_id)

    def record_denial(self, key_id: str, now: datetime) -> int:
        """A refusal of one of the key's requests; the key's denials in the probing window."""
        return self.activity(key_id).record_denial(now.timestamp(), self.settings.probe_window_seconds)

    def on_venue_order(self, account: str, order: VenueOrder) -> None:
        """A venue report: fills and closes feed the windows; closed orders leave the book."""
        tracked = self._orders.get((account, order.client_order_id))
        if tracked is None:
            return
        activity = self.activity(tracked.key_id)
        stamp = order.updated_at.timestamp()
        if order.filled_quantity > tracked.filled:
            tracked.filled = order.filled_quantity
            activity.record_trade(stamp, tracked.symbol)
        if order.status.is_open:
            return
        del self._orders[(account, order.client_order_id)]
        self.owners.remove(tracked.owner, tracked.symbol, account, order.client_order_id)
        canceled = order.status.value in ("canceled", "expired")
        if canceled:
            activity.forget_repeat(tracked.signature, order.client_order_id)  # a re-quote is no loop
        unfilled = order.filled_quantity == 0
        lived = stamp - tracked.placed_at
        fast = (
            canceled
            and unfilled
            and order.type is OrderType.LIMIT
            and lived <= self.settings.fast_cancel_seconds
        )
        activity.record_close(stamp, tracked.symbol, unfilled=unfilled, fast=fast, canceled=canceled)

    @property
    def tracked_orders(self) -> int:
        return len(self._orders)
