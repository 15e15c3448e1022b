"""The engine: how points become an action, self-match prevention, what venue reports teach it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bastion.config import FraudSettings
from bastion.domain.orders import (
    Fill,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    VenueOrder,
)
from bastion.fraud import rules
from bastion.fraud.activity import CANCEL_ALPHA
from bastion.fraud.engine import Action, Assessment, FraudEngine, Kind, decide
from bastion.fraud.model import Baselines, Features
from bastion.fraud.networks import KeyOrigin, Sightings, network_of, sightings_from
from bastion.fraud.rules import OrderFacts, Signal

D = Decimal
S = FraudSettings()
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ADDRESS = "10.0.0.1"
ALLOWED = Assessment(Action.ALLOW, 0.0, ())


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def known(*addresses: str) -> Sightings:
    return sightings_from((a, network_of(a)) for a in addresses)


def facts(
    side: Side = Side.BUY,
    price: str | None = "100",
    *,
    symbol: str = "X-USD",
    quantity: str = "1",
    reference: str = "100",
    liquidity: str | None = None,
    touch: str | None = None,
) -> OrderFacts:
    limit = None if price is None else D(price)
    return OrderFacts(
        symbol=symbol,
        side=side,
        type=OrderType.MARKET if price is None else OrderType.LIMIT,
        price=limit,
        notional=D(quantity) * (limit if limit is not None else D(reference)),
        reference=D(reference),
        liquidity=None if liquidity is None else D(liquidity),
        touch=None if touch is None else D(touch),
    )


def request_of(cid: str, order: OrderFacts, quantity: str = "1") -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        quantity=D(quantity),
        price=order.price,
        time_in_force=TimeInForce.GTC,
    )


def assess(
    engine: FraudEngine,
    order: OrderFacts | None = None,
    *,
    kind: Kind = Kind.ORDER,
    key: str = "k1",
    owner: str = "olga",
    address: str = ADDRESS,
    key_seen: Sightings | None = None,
    account_seen: Sightings | None = None,
    created_at: datetime | None = None,
    now: datetime = T0,
) -> Assessment:
    seen = key_seen if key_seen is not None else known(address)
    return engine.assess(
        kind=kind,
        key_id=key,
        owner=owner,
        address=address,
        network=network_of(address),
        key_seen=seen,
        account_seen=account_seen if account_seen is not None else seen,
        origin=KeyOrigin(created_at),
        now=now,
        order=order if order is not None or kind is not Kind.ORDER else facts(),
    )


def place(
    engine: FraudEngine,
    cid: str,
    order: OrderFacts,
    *,
    account: str = "a1",
    owner: str = "olga",
    key: str = "k1",
    now: datetime = T0,
    assessment: Assessment = ALLOWED,
) -> None:
    engine.record_order(
        key_id=key,
        account=account,
        owner=owner,
        request=request_of(cid, order),
        notional=order.notional,
        assessment=assessment,
        now=now,
    )


def report(
    cid: str,
    status: OrderStatus,
    *,
    order: OrderFacts | None = None,
    filled: str = "0",
    fills: int = 0,
    updated: datetime = T0,
) -> VenueOrder:
    order = order or facts()
    return VenueOrder(
        venue_order_id="v_" + cid,
        client_order_id=cid,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        time_in_force=TimeInForce.GTC,
        quantity=D(1),
        price=order.price,
        status=status,
        filled_quantity=D(filled),
        average_price=None,
        created_at=T0,
        updated_at=updated,
        fills=tuple(Fill(D(100), D("0.1"), updated) for _ in range(fills)),
    )


# -- decide ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("total", "action"),
    [
        (0.0, Action.ALLOW),
        (S.alert_at - 1e-9, Action.ALLOW),
        (S.alert_at, Action.ALERT),
        (S.hold_at - 1e-9, Action.ALERT),
        (S.hold_at, Action.HOLD),
        (S.deny_at - 1e-9, Action.HOLD),
        (S.deny_at, Action.DENY),
        (S.halt_at - 1e-9, Action.DENY),
        (S.halt_at, Action.HALT),
        (50.0, Action.HALT),
    ],
)
def test_decide_at_every_threshold(total: float, action: Action) -> None:
    assert decide(total, Kind.ORDER, S) is action


def test_decide_follows_configured_thresholds() -> None:
    tight = FraudSettings(alert_at=0.1, hold_at=0.2, deny_at=0.3, halt_at=0.4)
    assert [decide(x, Kind.ORDER, tight) for x in (0.09, 0.1, 0.2, 0.3, 0.4)] == list(Action)
    # equal thresholds: the strictest action wins
    same = FraudSettings(alert_at=1.0, hold_at=1.0, deny_at=1.0, halt_at=1.0)
    assert decide(1.0, Kind.ORDER, same) is Action.HALT
    assert decide(0.99, Kind.ORDER, same) is Action.ALLOW


@pytest.mark.parametrize("total", [S.alert_at, S.hold_at, S.deny_at, S.halt_at, 100.0])
def test_a_cancel_is_at_most_alerted(total: float) -> None:
    assert decide(total, Kind.CANCEL, S) is Action.ALERT
    assert decide(S.alert_at - 1e-9, Kind.CANCEL, S) is Action.ALLOW


def test_a_read_is_never_held() -> None:
    assert decide(S.hold_at, Kind.READ, S) is Action.ALERT
    assert decide(S.deny_at - 1e-9, Kind.READ, S) is Action.ALERT
    assert decide(S.deny_at, Kind.READ, S) is Action.DENY
    assert decide(S.halt_at, Kind.READ, S) is Action.HALT
    assert decide(S.alert_at - 1e-9, Kind.READ, S) is Action.ALLOW


# -- points add up ------------------------------------------------------------------------------------
def test_a_plain_order_from_a_known_address_is_allowed() -> None:
    found = assess(FraudEngine(S), facts())
    assert (found.action, found.score, found.signals, found.self_match) == (Action.ALLOW, 0.0, (), None)
    assert found.features is not None and found.model_score is None


def test_points_of_several_rules_add_up() -> None:
    engine = FraudEngine(S)
    thief = facts(Side.BUY, "120", liquidity="5000")  # +2000 bps into a thin market
    found = assess(engine, thief, address="198.51.100.7", key_seen=known(ADDRESS))
    assert [s.rule for s in found.signals] == [rules.NEW_NETWORK, rules.ILLIQUID, rules.PRICE]
    assert found.score == pytest.approx(S.new_network_points + S.illiquid_points + S.price_far_points)
    assert found.action is Action.DENY  # 1.85 with the defaults
    # the same minutes after the key was created (or rotated): past halt_at
    fresh = assess(engine, thief, address="198.51.100.7", key_seen=known(ADDRESS), created_at=T0)
    assert fresh.score == pytest.approx(2.6)
    assert fresh.action is Action.HALT


def test_reads_and_cancels_only_run_the_network_and_probing_rules() -> None:
    engine = FraudEngine(S)
    for _ in range(S.probe_denials):
        engine.record_denial("k1", T0)
    away, usual = "198.51.100.7", known(ADDRESS)
    order = facts(Side.BUY, "500", liquidity="1")  # would be far and illiquid, were it an order
    cancel = assess(engine, order, kind=Kind.CANCEL, address=away, key_seen=usual, created_at=T0)
    assert [s.rule for s in cancel.signals] == [rules.NEW_NETWORK, rules.PROBING]
    assert cancel.score == pytest.approx(S.new_network_points + S.fresh_key_points + S.probe_points)
    assert cancel.action is Action.ALERT  # never refused
    read = assess(engine, None, kind=Kind.READ, address=away, key_seen=usual, created_at=T0)
    assert read.action is Action.HALT and read.features is None


def test_a_read_from_a_fresh_keys_new_network_is_alerted_not_held() -> None:
    found = assess(
        FraudEngine(S), kind=Kind.READ, address="198.51.100.7", key_seen=known(ADDRESS), created_at=T0
    )
    assert found.score == pytest.approx(S.new_network_points + S.fresh_key_points)
    assert decide(found.score, Kind.ORDER, S) is Action.HOLD
    assert found.action is Action.ALERT


# -- self-match ---------------------------------------------------------------------------------------
def test_crossing_a_resting_order_of_another_account_of_the_owner_is_denied_without_points() -> None:
    engine = FraudEngine(S)
    place(engine, "bid", facts(Side.BUY, "100"), account="a1", owner="olga")
    found = assess(engine, facts(Side.SELL, "100"), key="k2", owner="olga")
    assert found.action is Action.DENY
    assert found.score == 0.0
    assert found.self_match is not None
    assert (found.self_match.account, found.self_match.client_order_id) == ("a1", "bid")
    assert [(s.rule, s.points) for s in found.signals] == [(rules.SELF_MATCH, 0.0)]
    assert "a1's bid" in found.signals[0].reason


def test_orders_that_do_not_cross_pass() -> None:
    engine = FraudEngine(S)
    place(engine, "bid", facts(Side.BUY, "100"), account="a1", owner="olga")
    place(engine, "ask", facts(Side.SELL, "102"), account="a1", owner="olga")
    passing = {
        "price not reached (sell)": (facts(Side.SELL, "100.01"), "olga"),
        "price not reached (buy)": (facts(Side.BUY, "101.99"), "olga"),
        "same side": (facts(Side.BUY, "101"), "olga"),
        "another owner": (facts(Side.SELL, "99"), "pavel"),
        "another symbol": (facts(Side.SELL, "99", symbol="Y-USD"), "olga"),
    }
    for case, (order, owner) in passing.items():
        found = assess(engine, order, key="k2", owner=owner)
        assert (case, found.action, found.self_match) == (case, Action.ALLOW, None)


def test_buying_at_or_above_a_resting_ask_crosses() -> None:
    engine = FraudEngine(S)
    place(engine, "ask", facts(Side.SELL, "102"), account="a1", owner="olga")
    assert assess(engine, facts(Side.BUY, "102"), key="k2").action is Action.DENY
    assert assess(engine, facts(Side.BUY, "103"), key="k2").action is Action.DENY


def test_a_market_order_without_a_known_touch_crosses_any_resting_opposite_order() -> None:
    engine = FraudEngine(S)
    place(engine, "bid", facts(Side.BUY, "1"), account="a1", owner="olga")  # far below the market
    found = assess(engine, facts(Side.SELL, None), key="k2", owner="olga")
    assert found.action is Action.DENY and found.self_match is not None
    assert assess(engine, facts(Side.BUY, None), key="k2", owner="olga").action is Action.ALLOW


def test_a_market_order_crosses_the_resting_orders_its_touch_reaches() -> None:
    engine = FraudEngine(S)
    place(engine, "bid", facts(Side.BUY, "99.99"), account="a1", owner="olga")
    place(engine, "ask", facts(Side.SELL, "100.02"), account="a1", owner="olga")
    # a market sell meets the bid: the owner's resting bid at the touch
    sell = assess(engine, facts(Side.SELL, None, touch="99.99"), key="k2")
    assert sell.self_match is not None and sell.self_match.client_order_id == "bid"
    assert sell.action is Action.DENY
    # a market buy meets the ask at 100.01, short of the owner's ask at 100.02
    buy = assess(engine, facts(Side.BUY, None, touch="100.01"), key="k2")
    assert (buy.action, buy.self_match) == (Action.ALLOW, None)
    assert assess(engine, facts(Side.BUY, None, touch="100.02"), key="k2").action is Action.DENY


def test_an_account_crossing_its_own_resting_order_is_a_self_match() -> None:
    engine = FraudEngine(S)
    place(engine, "bid", facts(Side.BUY, "100"), account="a1", owner="olga")
    assert assess(engine, facts(Side.SELL, "99"), key="k1", owner="olga").action is Action.DENY


def test_a_self_match_with_many_points_is_halted() -> None:
    engine = FraudEngine(S)
    place(engine, "ask", facts(Side.SELL, "120"), account="a1", owner="olga")
    thief = facts(Side.BUY, "120", liquidity="5000")
    found = assess(engine, thief, address="198.51.100.7", key_seen=known(ADDRESS), created_at=T0)
    assert found.self_match is not None
    assert found.action is Action.HALT


def test_orders_restored_after_a_restart_are_matched_and_leave_when_closed() -> None:
    engine = FraudEngine(S)
    bid = facts(Side.BUY, "100")
    engine.restore_order(
        key_id="k1", account="a1", owner="olga", request=request_of("bid", bid), placed_at=T0
    )
    engine.restore_order(
        key_id="k1", account="a1", owner="olga", request=request_of("m", facts(Side.BUY, None)), placed_at=T0
    )
    assert engine.tracks("a1", "bid") and engine.tracks("a1", "m")  # a retry is a retry
    assert len(engine.owners) == 1  # the market order does not rest
    crossing = assess(engine, facts(Side.SELL, "100"), key="k2", owner="olga")
    assert crossing.action is Action.DENY and crossing.self_match is not None
    assert assess(engine, facts(Side.SELL, "100"), key="k3", owner="other").self_match is None
    # the venue's report of the close takes it out, as for an order placed in this process
    engine.on_venue_order("a1", report("bid", OrderStatus.FILLED, order=bid, filled="1", fills=1))
    assert not engine.tracks("a1", "bid") and len(engine.owners) == 0
    assert assess(engine, facts(Side.SELL, "100"), key="k2", owner="olga").self_match is None
    windows = engine.activity("k1")
    assert windows.last_order_at is None  # restored orders are not counted again


def test_market_orders_never_rest_in_the_owner_book() -> None:
    engine = FraudEngine(S)
    place(engine, "m", facts(Side.BUY, None), account="a1", owner="olga")
    assert len(engine.owners) == 0 and engine.tracked_orders == 1
    found = assess(engine, facts(Side.SELL, "99.5"), key="k2")
    assert (found.action, found.self_match) == (Action.ALLOW, None)


# -- venue reports ---------------------------------------------------------------------------------------
def test_a_cancel_within_fast_cancel_seconds_without_a_fill_is_a_fast_cancel() -> None:
    engine = FraudEngine(S)
    place(engine, "c1", facts(), now=T0)
    engine.on_venue_order("a1", report("c1", OrderStatus.CANCELED, updated=at(S.fast_cancel_seconds)))
    window = engine.activity("k1").window("X-USD")
    assert (window.fast_cancels, window.unfilled, len(window.closed), len(window.cancels)) == (1, 1, 1, 1)
    assert engine.activity("k1").closed_orders == 1
    assert engine.activity("k1").fast_cancel_rate == pytest.approx(CANCEL_ALPHA)
    assert engine.owners.crossing("olga", "X-USD", Side.SELL, D(100)) is None
    assert engine.tracked_orders == 0


def test_a_cancel_after_fast_cancel_seconds_is_slow() -> None:
    engine = FraudEngine(S)
    place(engine, "c1", facts(), now=T0)
    later = at(S.fast_cancel_seconds + 0.001)
    engine.on_venue_order("a1", report("c1", OrderStatus.CANCELED, updated=later))
    window = engine.activity("k1").window("X-USD")
    assert (window.fast_cancels, window.unfilled, len(window.cancels)) == (0, 1, 1)
    assert engine.activity("k1").fast_cancel_rate == 0.0
    assert engine.owners.crossing("olga", "X-USD", Side.SELL, D(100)) is None


def test_a_partly_filled_order_stays_in_the_book_and_its_cancel_is_not_fast() -> None:
    engine = FraudEngine(S)
    place(engine, "c1", facts(), now=T0)
    partial = report("c1", OrderStatus.PARTIALLY_FILLED, filled="0.1", fills=1, updated=at(0.5))
    engine.on_venue_order("a1", partial)
    engine.on_venue_order("a1", partial)  # the same report again: no second trade
    window = engine.activity("k1").window("X-USD")
    assert len(window.trades) == 1 and len(window.closed) == 0
    assert engine.owners.crossing("olga", "X-USD", Side.SELL, D(100)) is not None
    engine.on_venue_order("a1", report("c1", OrderStatus.CANCELED, filled="0.1", fills=1, updated=at(1)))
    assert (window.fast_cancels, window.unfilled, len(window.closed), len(window.cancels)) == (0, 0, 1, 1)
    assert len(window.trades) == 1
    assert engine.owners.crossing("olga", "X-USD", Side.SELL, D(100)) is None


def test_a_filled_order_leaves_the_book() -> None:
    engine = FraudEngine(S)
    place(engine, "c1", facts(), now=T0)
    engine.on_venue_order("a1", report("c1", OrderStatus.FILLED, filled="1", fills=2, updated=at(0.1)))
    window = engine.activity("k1").window("X-USD")
    assert (len(window.trades), window.fast_cancels, window.unfilled, len(window.cancels)) == (1, 0, 0, 0)
    assert len(engine.owners) == 0 and engine.tracked_orders == 0


def test_expired_counts_as_a_cancel_and_rejected_does_not() -> None:
    engine = FraudEngine(S)
    place(engine, "e", facts(), now=T0)
    place(engine, "r", facts(), now=T0)
    engine.on_venue_order("a1", report("e", OrderStatus.EXPIRED, updated=at(1)))
    engine.on_venue_order("a1", report("r", OrderStatus.REJECTED, updated=at(1)))
    window = engine.activity("k1").window("X-USD")
    assert (window.fast_cancels, window.unfilled, len(window.closed), len(window.cancels)) == (1, 2, 2, 1)
    assert len(engine.owners) == 0


def test_a_market_order_closing_unfilled_is_not_a_fast_cancel() -> None:
    engine = FraudEngine(S)
    market = facts(Side.BUY, None)
    place(engine, "m", market, now=T0)
    engine.on_venue_order("a1", report("m", OrderStatus.EXPIRED, order=market, updated=at(0.1)))
    assert engine.activity("k1").window("X-USD").fast_cancels == 0


def test_reports_of_orders_never_tracked_are_ignored() -> None:
    engine = FraudEngine(S)
    engine.on_venue_order("a1", report("other", OrderStatus.CANCELED, updated=at(0.1)))
    assert engine.activity("k1").closed_orders == 0 and engine.tracked_orders == 0


def test_forget_order_removes_it() -> None:
    engine = FraudEngine(S)
    place(engine, "c1", facts(), now=T0)
    assert engine.owners.crossing("olga", "X-USD", Side.SELL, D(100)) is not None
    engine.forget_order("a1", "c1")
    assert engine.owners.crossing("olga", "X-USD", Side.SELL, D(100)) is None
    assert engine.tracked_orders == 0
    engine.on_venue_order("a1", report("c1", OrderStatus.CANCELED, updated=at(0.1)))
    assert engine.activity("k1").closed_orders == 0  # a report after forgetting teaches nothing
    engine.forget_order("a1", "c1")  # twice is harmless


def test_record_order_feeds_the_keys_baselines() -> None:
    engine = FraudEngine(S)
    for i in range(3):
        place(engine, f"c{i}", facts(quantity="2"), now=at(10 * i))
    key = engine.activity("k1")
    assert key.orders == 3 and key.last_order_at == at(20).timestamp()
    assert key.mean_gap == pytest.approx(10.0)
    assert key.mean_notional == pytest.approx(200.0)
    assert key.window("X-USD").orders_ever == 3 and len(key.window("X-USD").placed) == 3


def test_a_warmed_up_key_spoofing_is_judged_on_its_next_order() -> None:
    engine = FraudEngine(S)
    for i in range(S.spoof_min_fast_cancels):
        place(engine, f"s{i}", facts(), now=at(i))
        engine.on_venue_order("a1", report(f"s{i}", OrderStatus.CANCELED, updated=at(i + 0.5)))
    found = assess(engine, facts(), now=at(5))
    assert [s.rule for s in found.signals] == [rules.SPOOFING]
    assert found.action is Action.DENY


# -- the model's lag ------------------------------------------------------------------------------------
def test_the_model_scores_only_after_its_warmup_is_learned() -> None:
    warmup = 3
    engine = FraudEngine(FraudSettings(model_warmup_orders=warmup))
    for i in range(warmup):
        found = assess(engine, facts(), now=at(10 * i))
        assert found.model_score is None
        place(engine, f"c{i}", facts(), now=at(10 * i), assessment=found)
    assert engine.baselines.pending == warmup
    assert assess(engine, facts(), now=at(100)).model_score is None  # queued, not learned yet
    assert engine.baselines.learn_pending() == warmup
    assert engine.baselines.pending == 0
    score = assess(engine, facts(), now=at(110)).model_score
    assert isinstance(score, float) and 0.0 <= score <= 1.0


def test_alerted_orders_are_not_learned_from() -> None:
    engine = FraudEngine(S)
    alerted = assess(engine, facts(), address="198.51.100.7", key_seen=known(ADDRESS))
    assert alerted.action is Action.ALERT and alerted.features is not None
    place(engine, "c1", facts(), assessment=alerted)
    assert engine.baselines.pending == 0
    place(engine, "c2", facts(), assessment=assess(engine, facts()))
    assert engine.baselines.pending == 1


class Certain(Baselines):
    """A model sure that every order is strange."""

    def score(self, key_id: str, x: Features) -> float | None:
        return 1.0


def test_the_models_share_adds_to_the_rules_points() -> None:
    engine = FraudEngine(S, Certain(warmup=1))
    assert isinstance(engine.baselines, Certain)
    found = assess(engine, facts(), address="10.0.0.2", key_seen=known(ADDRESS))  # a new address: 0.2
    assert [s.rule for s in found.signals] == [rules.NEW_ADDRESS, rules.MODEL]
    assert found.model_score == 1.0
    assert found.score == pytest.approx(S.new_address_points + S.model_weight)
    assert found.action is Action.ALERT
    assert found.facts()["model_score"] == 1.0


def test_the_real_models_share_adds_to_the_rules_points() -> None:
    """With river's model, not a stub: a key's usual stream learned, then an order far larger
    than usual sent at once is held by the rules, and the model's share adds to their points."""
    engine = FraudEngine(S)
    rng = random.Random(3)
    t = 0.0
    for i in range(200):  # every ~10 s, about one unit, just inside the touch, filled
        t += rng.uniform(8, 12)
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        usual = facts(
            side, "99.9" if side is Side.BUY else "100.1", quantity=str(round(rng.uniform(0.8, 1.25), 2))
        )
        place(engine, f"c{i}", usual, now=at(t), assessment=assess(engine, usual, now=at(t)))
        engine.on_venue_order(
            "a1", report(f"c{i}", OrderStatus.FILLED, order=usual, filled="1", updated=at(t + 1))
        )
    assert engine.baselines.learn_pending(10_000) == 200
    calm = assess(engine, facts(Side.BUY, "99.9"), now=at(t + 10))
    assert (
        calm.action is Action.ALLOW and calm.model_score is not None and calm.model_score < S.model_threshold
    )
    odd = assess(engine, facts(Side.BUY, None, quantity="100"), now=at(t + 0.01))
    assert [s.rule for s in odd.signals] == [rules.SIZE, rules.MODEL]
    model = odd.signals[-1]
    assert odd.model_score is not None and odd.model_score >= S.model_threshold
    assert 0 < model.points <= S.model_weight
    assert odd.score == pytest.approx(S.notional_points + model.points)
    assert odd.action is decide(odd.score, Kind.ORDER, S) is Action.HOLD


# -- Assessment --------------------------------------------------------------------------------------------
def test_facts_of_a_plain_allow() -> None:
    assert Assessment(Action.ALLOW, 0.0, ()).facts() == {"action": "allow", "score": 0.0}
    assert Assessment(Action.ALLOW, 0.0, ()).top is None


def test_facts_keep_action_score_model_score_and_rules() -> None:
    signals = (Signal("a", 0.6, "first"), Signal("b", 1.0, "second"))
    found = Assessment(Action.HALT, 1.234567, signals, model_score=0.987654)
    assert found.facts() == {
        "action": "halt",
        "score": 1.2346,
        "model_score": 0.9877,
        "rules": [
            {"rule": "a", "points": 0.6, "reason": "first"},
            {"rule": "b", "points": 1.0, "reason": "second"},
        ],
    }
    assert found.top == signals[1]


# -- property: self-match prevention holds for any sequence --------------------------------------------------
OWNER = {"a1": "olga", "a2": "olga", "b1": "pavel", "b2": "pavel"}
ACCOUNTS = sorted(OWNER)


@dataclass
class Resting:
    owner: str
    side: Side
    price: Decimal


@dataclass
class Book:
    """The test's own account of which limit orders rest, kept apart from the engine's."""

    resting: dict[tuple[str, str], Resting] = field(default_factory=dict)

    def crosses(self, owner: str, side: Side, price: Decimal | None) -> bool:
        for order in self.resting.values():
            if order.owner != owner or order.side is side:
                continue
            if price is None or (price >= order.price if side is Side.BUY else price <= order.price):
                return True
        return False


places = st.tuples(
    st.just("place"),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(list(Side)),
    st.one_of(st.none(), st.integers(min_value=97, max_value=103)),  # None: a market order
    st.one_of(st.none(), st.integers(min_value=98, max_value=102)),  # a market order's touch, if known
    st.floats(min_value=0.0, max_value=5.0),
)
closes = st.tuples(
    st.sampled_from(["fill", "partial", "cancel", "forget"]),
    st.integers(min_value=0, max_value=1_000),
    st.floats(min_value=0.0, max_value=5.0),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(places, places, closes), min_size=1, max_size=40))
def test_no_order_crossing_a_resting_order_of_its_owner_gets_through(
    steps: list[tuple[object, ...]],
) -> None:
    engine = FraudEngine(S)
    book = Book()
    live: list[tuple[str, str, OrderFacts]] = []  # (account, cid, order) the engine tracks
    clock = 0.0
    for number, step in enumerate(steps):
        if step[0] == "place":
            _, account, side, tick, touch, dt = step
            assert isinstance(account, str) and isinstance(side, Side) and isinstance(dt, float)
            clock += dt
            limit = None if tick is None else str(tick)
            order = facts(side, limit, touch=None if touch is None or limit is not None else str(touch))
            owner = OWNER[account]
            found = assess(engine, order, key="k_" + account, owner=owner, now=at(clock))
            # a limit order reaches its price; a market order its touch, or anything when unknown
            reach = order.price if order.price is not None else order.touch
            crosses = book.crosses(owner, side, reach)
            event("an order crossed its owner's" if crosses else "an order crossed nothing")
            if crosses:
                assert found.action in (Action.DENY, Action.HALT)
                assert found.self_match is not None
            else:
                assert found.self_match is None
            if found.action in (Action.ALLOW, Action.ALERT):
                cid = f"c{number}"
                place(engine, cid, order, account=account, owner=owner, key="k_" + account, now=at(clock))
                if order.price is None:  # a market order fills at once
                    done = report(
                        cid, OrderStatus.FILLED, order=order, filled="1", fills=1, updated=at(clock)
                    )
                    engine.on_venue_order(account, done)
                else:
                    book.resting[(account, cid)] = Resting(owner, side, order.price)
                    live.append((account, cid, order))
        elif live:
            kind, pick, dt = step
            assert isinstance(pick, int) and isinstance(dt, float)
            clock += dt
            account, cid, order = live[pick % len(live)]
            if kind == "partial":
                engine.on_venue_order(
                    account,
                    report(
                        cid,
                        OrderStatus.PARTIALLY_FILLED,
                        order=order,
                        filled="0.5",
                        fills=1,
                        updated=at(clock),
                    ),
                )
                continue
            if kind == "forget":
                engine.forget_order(account, cid)
            else:
                status = OrderStatus.FILLED if kind == "fill" else OrderStatus.CANCELED
                filled = "1" if kind == "fill" else "0"
                engine.on_venue_order(
                    account, report(cid, status, order=order, filled=filled, updated=at(clock))
                )
            live.remove((account, cid, order))
            del book.resting[(account, cid)]
        assert len(engine.owners) == len(book.resting)
