"""Each fraud rule at its thresholds: exactly at the boundary it fires, just short of it it does not."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bastion.config import FraudSettings
from bastion.domain.orders import OrderType, Side
from bastion.fraud import rules
from bastion.fraud.activity import KeyActivity, SymbolWindow
from bastion.fraud.networks import KeyOrigin, Sightings, network_of, sightings_from
from bastion.fraud.rules import OrderFacts

D = Decimal
S = FraudSettings()
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
T = 10_000.0  # "now" in epoch seconds, for the windows
HUNDRED = D(100)


def facts(
    side: Side = Side.BUY,
    price: str | None = "100",
    *,
    reference: str = "100",
    liquidity: str | None = None,
    notional: str = "100",
    symbol: str = "X-USD",
    touch: str | None = None,
) -> OrderFacts:
    return OrderFacts(
        symbol=symbol,
        side=side,
        type=OrderType.LIMIT if price is not None else OrderType.MARKET,
        price=None if price is None else D(price),
        notional=D(notional),
        reference=D(reference),
        liquidity=None if liquidity is None else D(liquidity),
        touch=None if touch is None else D(touch),
    )


def seen(*addresses: str) -> Sightings:
    return sightings_from((a, network_of(a)) for a in addresses)


def rule_names(signals: Iterable[rules.Signal]) -> list[str]:
    return [s.rule for s in signals]


# -- networks -----------------------------------------------------------------------------------
def test_network_of_uses_the_prefixes() -> None:
    assert network_of("203.0.113.77") == "203.0.113.0/24"
    assert network_of("203.0.113.77", ipv4_prefix=16) == "203.0.0.0/16"
    assert network_of("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert network_of("::ffff:203.0.113.77") == "203.0.113.0/24"  # an IPv4-mapped address is IPv4
    assert network_of("not-an-address") == ""


# -- new_network --------------------------------------------------------------------------------
def new_network(
    address: str,
    key: Sightings,
    account: Sightings | None = None,
    created_at: datetime | None = None,
    settings: FraudSettings = S,
) -> rules.Signal | None:
    return rules.new_network(
        address,
        network_of(address),
        key,
        account if account is not None else key,
        KeyOrigin(created_at),
        NOW,
        settings,
    )


def test_a_known_address_is_nothing_new() -> None:
    assert new_network("10.0.0.1", seen("10.0.0.1")) is None


def test_a_new_address_in_a_known_network_weighs_little() -> None:
    found = new_network("10.0.0.2", seen("10.0.0.1"))
    assert found is not None
    assert (found.rule, found.points) == (rules.NEW_ADDRESS, S.new_address_points)
    assert "10.0." not in found.reason  # reasons go to the ledger in clear: no address in them


def test_an_unknown_network_is_a_new_network() -> None:
    found = new_network("10.0.1.1", seen("10.0.0.1"))
    assert found is not None
    assert (found.rule, found.points) == (rules.NEW_NETWORK, S.new_network_points)
    assert "/24" in found.reason and "10.0." not in found.reason  # no address in clear


def test_the_first_use_of_a_key_is_not_a_new_network() -> None:
    # nothing is known of the key or its account yet
    assert new_network("10.0.0.1", Sightings(), Sightings()) is None
    # the key is new, but its account is known from that network (another key of the account)
    assert new_network("10.0.0.9", Sightings(), seen("10.0.0.1")) is None


def test_a_new_keys_first_use_from_a_network_its_account_never_used_is_signalled() -> None:
    found = new_network("192.0.2.1", Sightings(), seen("10.0.0.1"))
    assert found is not None and found.rule == rules.NEW_NETWORK


def test_a_fresh_key_adds_points_up_to_fresh_key_seconds() -> None:
    limit = timedelta(seconds=S.fresh_key_seconds)
    at_limit = new_network("10.0.1.1", seen("10.0.0.1"), created_at=NOW - limit)
    assert at_limit is not None
    assert at_limit.points == pytest.approx(S.new_network_points + S.fresh_key_points)
    assert f"{int(S.fresh_key_seconds)} s after its creation" in at_limit.reason
    just_after = new_network("10.0.1.1", seen("10.0.0.1"), created_at=NOW - limit - timedelta(milliseconds=1))
    assert just_after is not None and just_after.points == pytest.approx(S.new_network_points)
    unknown = new_network("10.0.1.1", seen("10.0.0.1"), created_at=None)
    assert unknown is not None and unknown.points == pytest.approx(S.new_network_points)


def test_a_fresh_key_does_not_make_a_new_address_in_a_known_network_weigh_more() -> None:
    found = new_network("10.0.0.2", seen("10.0.0.1"), created_at=NOW)
    assert found is not None and found.points == S.new_address_points


def test_networks_follow_the_configured_prefix() -> None:
    wide = FraudSettings(ipv4_prefix=16)
    key = sightings_from([("10.0.0.1", network_of("10.0.0.1", 16))])
    found = rules.new_network("10.0.99.1", network_of("10.0.99.1", 16), key, key, KeyOrigin(None), NOW, wide)
    assert found is not None and found.rule == rules.NEW_ADDRESS


def test_an_address_the_key_used_is_never_a_new_network() -> None:
    wide = FraudSettings(ipv4_prefix=16)
    trusted = seen("10.0.0.1")  # what Oversight.trust stores: network_of(address) with the default /24
    found = rules.new_network(
        "10.0.0.1", network_of("10.0.0.1", 16), trusted, trusted, KeyOrigin(None), NOW, wide
    )
    assert found is None


# -- illiquid_symbol ------------------------------------------------------------------------------
def window_with(orders_ever: int) -> SymbolWindow:
    window = SymbolWindow()
    window.orders_ever = orders_ever
    return window


def test_illiquid_fires_just_below_illiquid_below_and_not_at_it() -> None:
    below = D(S.illiquid_below) - D("0.01")
    found = rules.illiquid_symbol(facts(liquidity=str(below)), window_with(0), S)
    assert found is not None
    assert (found.rule, found.points) == (rules.ILLIQUID, S.illiquid_points)
    assert "order 1 of this key in X-USD" in found.reason
    assert rules.illiquid_symbol(facts(liquidity=S.illiquid_below), window_with(0), S) is None


def test_illiquid_only_for_the_first_orders_in_the_symbol() -> None:
    thin = facts(liquidity="5000")
    last = rules.illiquid_symbol(thin, window_with(S.illiquid_first_orders - 1), S)
    assert last is not None and f"order {S.illiquid_first_orders} " in last.reason
    assert rules.illiquid_symbol(thin, window_with(S.illiquid_first_orders), S) is None


def test_illiquid_is_silent_when_the_venue_states_no_liquidity() -> None:
    assert rules.illiquid_symbol(facts(liquidity=None), window_with(0), S) is None


# -- price_deviation --------------------------------------------------------------------------------
def beyond(side: Side, bps: int, reference: Decimal = HUNDRED) -> str:
    """The price ``bps`` basis points on the aggressive side of ``reference``."""
    step = reference * bps / 10_000
    return str(reference + step if side is Side.BUY else reference - step)


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
@pytest.mark.parametrize(
    ("bps", "points"),
    [
        (S.price_alert_bps - 1, None),
        (S.price_alert_bps, S.price_alert_points),
        (S.price_far_bps - 1, S.price_alert_points),
        (S.price_far_bps, S.price_far_points),
        (S.price_far_bps * 3, S.price_far_points),
    ],
)
def test_an_aggressive_price_at_the_thresholds(side: Side, bps: int, points: float | None) -> None:
    order = facts(side, beyond(side, bps))
    assert order.deviation_bps == pytest.approx(bps)
    found = rules.price_deviation(order, S)
    if points is None:
        assert found is None
    else:
        assert found is not None
        assert (found.rule, found.points) == (rules.PRICE, points)
        assert f"{side.value} {bps} bps" in found.reason


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_the_passive_side_never_fires(side: Side) -> None:
    other = Side.SELL if side is Side.BUY else Side.BUY
    order = facts(side, beyond(other, S.price_far_bps * 2))  # far, but on the passive side
    assert order.deviation_bps < 0
    assert rules.price_deviation(order, S) is None


def test_market_orders_are_measured_at_the_touch() -> None:
    # a market buy pays the ask: an ordinary spread is nothing, a pumped thin book is
    assert facts(Side.BUY, None, reference="100", touch="100.05").deviation_bps == pytest.approx(5.0)
    assert rules.price_deviation(facts(Side.BUY, None, reference="100", touch="100.05"), S) is None
    assert rules.price_deviation(facts(Side.BUY, None, reference="100", touch="104.99"), S) is None
    alert = rules.price_deviation(facts(Side.BUY, None, reference="100", touch="105"), S)
    assert alert is not None and alert.points == S.price_alert_points
    far = rules.price_deviation(facts(Side.BUY, None, reference="100", touch="150"), S)
    assert far is not None and far.points == S.price_far_points
    # a market sell takes the bid: far below the reference is its aggressive side
    dumped = rules.price_deviation(facts(Side.SELL, None, reference="100", touch="70"), S)
    assert dumped is not None and dumped.points == S.price_far_points
    assert rules.price_deviation(facts(Side.SELL, None, reference="100", touch="130"), S) is None
    # no touch known: nothing to measure
    assert facts(Side.BUY, None, reference="100").deviation_bps == 0.0


def test_no_reference_price_means_no_deviation() -> None:
    assert facts(Side.BUY, "1000", reference="0").deviation_bps == 0.0


# -- bursts -------------------------------------------------------------------------------------------
def activity(
    *,
    orders: int = S.burst_warmup_orders,
    mean_gap: float | None = 10.0,
    mean_notional: float | None = 100.0,
    recent: Iterable[tuple[float, float]] = (),
    usual_peak: float = 0.0,
) -> KeyActivity:
    found = KeyActivity(orders=orders, mean_gap=mean_gap, mean_notional=mean_notional, usual_peak=usual_peak)
    found.recent.extend(recent)
    found.recent_notional = sum(n for _, n in found.recent)
    return found


def recent(n: int, notional: float = 100.0, at: float = T - 1) -> list[tuple[float, float]]:
    return [(at, notional)] * n


def test_no_burst_rules_before_the_warmup() -> None:
    busy = recent(50, notional=10_000.0)
    assert rules.bursts(activity(orders=S.burst_warmup_orders - 1, recent=busy), facts(), T, S) == []
    assert rules.bursts(activity(mean_notional=0.0, recent=busy), facts(), T, S) == []
    warmed = rules.bursts(activity(recent=busy), facts(), T, S)
    assert rule_names(warmed) == [rules.BURST_RATE]


def test_the_burst_rate_at_burst_factor_times_the_keys_usual_peak() -> None:
    # a key that usually sends up to 2 orders in a window: burst_factor x 2 orders are a burst
    needed = math.ceil(S.burst_factor * 2)
    assert needed >= S.burst_min_orders
    at = rules.bursts(activity(recent=recent(needed - 1), usual_peak=2), facts(), T, S)  # + this order
    assert rule_names(at) == [rules.BURST_RATE]
    assert at[0].points == S.burst_points
    assert f"{needed} orders in" in at[0].reason and "usually 2" in at[0].reason
    assert rules.bursts(activity(recent=recent(needed - 2), usual_peak=2), facts(), T, S) == []


def test_a_grid_ladder_within_its_usual_peak_is_no_burst() -> None:
    ladder = activity(recent=recent(11), usual_peak=12)  # the 12th order of a ladder of 12
    assert rules.bursts(ladder, facts(), T, S) == []


def test_the_burst_rate_needs_burst_min_orders() -> None:
    # a key that never sent two orders in a window: two are not a burst yet, three are
    few = rules.bursts(activity(recent=recent(S.burst_min_orders - 2)), facts(), T, S)
    assert few == []
    enough = rules.bursts(activity(recent=recent(S.burst_min_orders - 1)), facts(), T, S)
    assert rule_names(enough) == [rules.BURST_RATE]


def test_orders_older_than_the_burst_window_do_not_count() -> None:
    edge = T - S.burst_window_seconds
    kept = activity(recent=recent(4, at=edge))
    assert rule_names(rules.bursts(kept, facts(), T, S)) == [rules.BURST_RATE]
    gone = activity(recent=recent(4, at=edge - 0.001))
    assert rules.bursts(gone, facts(), T, S) == []
    assert len(gone.recent) == 0


def test_the_burst_notional_at_burst_factor_times_the_usual_notional() -> None:
    # 3 orders (too few for a rate burst at a usual peak of 2) carrying 3 x 2 x the usual 100
    limit = S.burst_factor * 2 * 100.0
    window = recent(2, notional=200.0)
    this = limit - 400.0
    at = rules.bursts(activity(recent=window, usual_peak=2), facts(notional=str(this)), T, S)
    assert rule_names(at) == [rules.BURST_NOTIONAL]
    assert at[0].points == S.burst_points
    below = rules.bursts(activity(recent=window, usual_peak=2), facts(notional=str(this - 0.01)), T, S)
    assert below == []


def test_the_same_order_repeated_is_a_loop_even_before_the_warmup() -> None:
    young = activity(orders=0)
    order = facts()
    for n in range(S.repeat_orders - 1):
        assert rules.bursts(young, order, T, S) == []
        young.note(T, order.signature, f"c{n}", float(order.notional))
    found = rules.bursts(young, order, T, S)
    assert rule_names(found) == [rules.REPEAT]
    assert found[0].points == S.burst_points
    other = facts(notional="101")  # another quantity or price is another order (a ladder)
    assert rules.bursts(young, replace(other, quantity=Decimal("2")), T, S) == []


def test_a_cancelled_order_is_no_repeat_and_old_ones_leave_the_window() -> None:
    key = activity(orders=0)
    order = facts()
    for n in range(S.repeat_orders - 1):
        key.note(T, order.signature, f"c{n}", 100.0)
    key.forget_repeat(order.signature, "c0")  # a market maker cancelled it before re-quoting
    assert rules.bursts(key, order, T, S) == []
    key.note(T, order.signature, "c9", 100.0)
    assert rule_names(rules.bursts(key, order, T, S)) == [rules.REPEAT]
    later = T + S.burst_window_seconds + 0.001
    assert rules.bursts(key, order, later, S) == []


def test_a_clean_order_teaches_the_usual_peak_once_its_window_has_passed() -> None:
    key = activity()
    window = S.burst_window_seconds
    for n in range(1, 13):  # a ladder of 12 within a second
        key.learn_peak(n, T + n / 100, window)
    assert key.usual_peak == 0  # during the burst, the burst is not yet usual
    key.learn_peak(1, T + window + 1, window)
    assert key.usual_peak == 12
    for n in range(100):  # quiet windows: it is forgotten slowly
        key.learn_peak(1, T + (n + 2) * (window + 1), window)
    assert 10 < key.usual_peak < 12


def test_a_rate_burst_is_not_also_counted_as_a_notional_burst() -> None:
    found = rules.bursts(activity(recent=recent(10, notional=1_000.0)), facts(), T, S)
    assert rule_names(found) == [rules.BURST_RATE]


def test_one_order_at_notional_factor_times_the_usual() -> None:
    big = S.notional_factor * 100.0
    at = rules.bursts(activity(), facts(notional=str(big)), T, S)
    assert rule_names(at) == [rules.SIZE]
    assert at[0].points == S.notional_points
    assert f"{S.notional_factor:.1f}x usual" in at[0].reason
    assert rules.bursts(activity(), facts(notional=str(big - 0.01)), T, S) == []


# -- spoofing -------------------------------------------------------------------------------------------
def symbol_window(
    *,
    fast: int = 0,
    slow_unfilled: int = 0,
    filled: int = 0,
    placed: int = 0,
    cancels: int = 0,
    trades: int = 0,
    at: float = T - 1,
) -> SymbolWindow:
    window = SymbolWindow()
    for unfilled, fast_cancel, count in (
        (True, True, fast),
        (True, False, slow_unfilled),
        (False, False, filled),
    ):
        for _ in range(count):
            window.close(at, unfilled=unfilled, fast=fast_cancel)
    window.placed.extend([at] * placed)
    window.cancels.extend([at] * cancels)
    window.trades.extend([at] * trades)
    return window


def spoof(window: SymbolWindow, key: KeyActivity | None = None, now: float = T) -> list[str]:
    return rule_names(rules.spoofing(key or KeyActivity(), window, now, S))


def test_spoofing_needs_spoof_min_fast_cancels() -> None:
    assert spoof(symbol_window(fast=S.spoof_min_fast_cancels - 1)) == []
    found = rules.spoofing(KeyActivity(), symbol_window(fast=S.spoof_min_fast_cancels), T, S)
    assert rule_names(found) == [rules.SPOOFING]
    assert found[0].points == S.spoof_points
    assert f"{S.spoof_min_fast_cancels} of {S.spoof_min_fast_cancels} orders cancelled" in found[0].reason


def test_spoofing_at_the_fast_cancel_ratio() -> None:
    closed = 100
    at = round(S.spoof_fast_cancel_ratio * closed)
    assert spoof(symbol_window(fast=at, filled=closed - at)) == [rules.SPOOFING]
    assert spoof(symbol_window(fast=at - 1, filled=closed - at + 1)) == []


def test_a_key_that_fast_cancels_by_habit_is_exempt_once_warmed_up() -> None:
    window = symbol_window(fast=5)
    habit = KeyActivity(closed_orders=S.burst_warmup_orders, fast_cancel_rate=S.spoof_baseline_max)
    assert spoof(window, habit) == []
    below = KeyActivity(closed_orders=S.burst_warmup_orders, fast_cancel_rate=S.spoof_baseline_max - 0.01)
    assert spoof(window, below) == [rules.SPOOFING]
    # not warmed up yet: a high rate from a handful of closes proves no habit
    young = KeyActivity(closed_orders=S.burst_warmup_orders - 1, fast_cancel_rate=0.9)
    assert spoof(window, young) == [rules.SPOOFING]


def test_the_unfilled_ratio_at_its_boundaries() -> None:
    n = S.ratio_min_orders
    # ratio_min_orders placed and closed, all unfilled (slowly: no spoofing), and some trades
    assert spoof(symbol_window(slow_unfilled=n, placed=n, trades=1)) == [rules.UNFILLED]
    assert spoof(symbol_window(slow_unfilled=n, placed=n - 1, trades=1)) == []
    assert spoof(symbol_window(slow_unfilled=n - 1, placed=n, trades=1)) == []
    # exactly unfilled_ratio of 100 closed orders, and one less
    closed = 100
    at = round(S.unfilled_ratio * closed)
    found = rules.spoofing(
        KeyActivity(), symbol_window(slow_unfilled=at, filled=closed - at, placed=n, trades=1), T, S
    )
    assert rule_names(found) == [rules.UNFILLED]
    assert found[0].points == S.ratio_points
    assert f"{at} of {closed} orders unfilled" in found[0].reason
    assert spoof(symbol_window(slow_unfilled=at - 1, filled=closed - at + 1, placed=n, trades=1)) == []


def test_the_order_to_trade_ratio_at_its_boundaries() -> None:
    n = S.ratio_min_orders
    limit = int(S.max_order_to_trade)
    found = rules.spoofing(KeyActivity(), symbol_window(placed=n, cancels=limit - n, trades=1), T, S)
    assert rule_names(found) == [rules.ORDER_TO_TRADE]
    assert found[0].points == S.ratio_points
    assert f"ratio {limit}" in found[0].reason
    assert spoof(symbol_window(placed=n, cancels=limit - n - 1, trades=1)) == []
    # no trades at all counts as one
    assert spoof(symbol_window(placed=n, cancels=limit - n)) == [rules.ORDER_TO_TRADE]
    # too few orders placed to judge a ratio, however many cancels
    assert spoof(symbol_window(placed=n - 1, cancels=10 * limit)) == []


def test_the_spoofing_window_expires() -> None:
    start = T - S.spoof_window_seconds
    window = symbol_window(fast=1, at=start)
    window.close(start + 1, unfilled=True, fast=True)
    assert spoof(window, now=T) == [rules.SPOOFING]  # at exactly the window's age: still in
    assert spoof(window, now=T + 0.5) == []  # the first one has left the window
    assert len(window.closed) == 1
    ratios = symbol_window(slow_unfilled=60, placed=60, cancels=60, at=start)
    assert spoof(ratios, now=T) == [rules.UNFILLED, rules.ORDER_TO_TRADE]
    assert spoof(ratios, now=T + 0.5) == []
    assert (len(ratios.placed), len(ratios.closed), len(ratios.cancels)) == (0, 0, 0)


# -- probing ----------------------------------------------------------------------------------------------
def denied(times: Iterable[float]) -> KeyActivity:
    key = KeyActivity()
    for at in times:
        key.record_denial(at, S.probe_window_seconds)
    return key


def test_probing_at_probe_denials() -> None:
    assert rules.probing(denied([T] * (S.probe_denials - 1)), T, S) is None
    found = rules.probing(denied([T] * S.probe_denials), T, S)
    assert found is not None
    assert (found.rule, found.points) == (rules.PROBING, S.probe_points)
    assert f"{S.probe_denials} denials" in found.reason


def test_probing_window_expires() -> None:
    start = T - S.probe_window_seconds
    key = denied([start + i for i in range(S.probe_denials)])
    assert rules.probing(key, T, S) is not None  # the oldest is exactly the window's age
    assert rules.probing(key, T + 0.5, S) is None
    assert key.recent_denials(T + 0.5, S.probe_window_seconds) == S.probe_denials - 1


def test_record_denial_counts_within_the_window() -> None:
    key = KeyActivity()
    assert [key.record_denial(T + i, 10.0) for i in range(3)] == [1, 2, 3]
    assert key.record_denial(T + 11.5, 10.0) == 2  # T and T+1 have left; T+2 and this remain


# -- model_points -------------------------------------------------------------------------------------------
def test_model_points() -> None:
    assert rules.model_points(None, S) is None
    assert rules.model_points(S.model_threshold - 0.001, S) is None
    assert rules.model_points(S.model_threshold, S) is None  # at the threshold the share is 0
    half = rules.model_points((S.model_threshold + 1) / 2, S)
    assert half is not None
    assert half.rule == rules.MODEL
    assert half.points == pytest.approx(S.model_weight / 2, abs=1e-4)
    full = rules.model_points(1.0, S)
    assert full is not None and full.points == pytest.approx(S.model_weight)
    assert "score 1.000" in full.reason


def test_model_points_with_a_threshold_of_one() -> None:
    strict = FraudSettings(model_threshold=1.0)
    assert rules.model_points(0.999, strict) is None
    found = rules.model_points(1.0, strict)
    assert found is not None and found.points == strict.model_weight


def test_model_points_with_no_weight_is_no_signal() -> None:
    assert rules.model_points(1.0, FraudSettings(model_weight=0.0)) is None
