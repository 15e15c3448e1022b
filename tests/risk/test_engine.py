"""Every limit at its boundary: exactly at the limit passes; one tick or one lot beyond fails
with its reason.  The market is X-USD (tick 0.01, lot 0.1) quoted 99.99 / 100.01, last 100."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from bastion.domain.orders import OrderRequest, OrderStatus, Side
from bastion.domain.policy import EffectivePolicy
from bastion.domain.trading import TradingState
from bastion.errors import ErrorCode
from bastion.risk.book import ExposureBook, TrackedOrder
from bastion.risk.engine import Rejection, RiskEngine
from tests.risk.support import D, FixedMarket, order, policy, venue_report

MONDAY_NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
Setup = Callable[["Rig"], None]


@dataclass
class Rig:
    now: datetime = MONDAY_NOON
    book: ExposureBook = field(default_factory=ExposureBook)

    def __post_init__(self) -> None:
        self.engine = RiskEngine(self.book, FixedMarket(self.now))

    def place(
        self, p: EffectivePolicy, request: OrderRequest, state: TradingState = TradingState.ACTIVE
    ) -> TrackedOrder | Rejection:
        return self.engine.place("bst_k", "alice", p, state, request, self.now)

    def fill(self, request: OrderRequest, *fills: tuple[str, str], status: OrderStatus | None = None) -> None:
        """Place ``request`` without limits and let the venue report these fills."""
        placed = self.place(policy(), request)
        assert isinstance(placed, TrackedOrder)
        self.book.on_venue_order(
            "alice", venue_report(request, self.now, fills=fills, status=status), self.now, "USD"
        )


def nothing(rig: Rig) -> None:
    pass


def long_position(quantity: str, price: str = "100") -> Setup:
    def setup(rig: Rig) -> None:
        rig.fill(order(quantity), (price, quantity))

    return setup


def open_orders(count: int) -> Setup:
    def setup(rig: Rig) -> None:
        for _ in range(count):
            rig.fill(order("1", "90"))  # resting buy, no fill

    return setup


def realised_loss(amount: str) -> Setup:
    """Buy 10 at 100, sell 10 at 100 - amount/10: realises -amount."""

    def setup(rig: Rig) -> None:
        rig.fill(order("10"), ("100", "10"))
        price = str(D(100) - D(amount) / 10)
        rig.fill(order("10", side=Side.SELL), (price, "10"))

    return setup


def traded_notional(notional: str) -> Setup:
    def setup(rig: Rig) -> None:
        quantity = str(D(notional) / 100)
        rig.fill(order(quantity), ("100", quantity))

    return setup


# (name, policy fields, setup, order at the limit, order one step beyond, reason)
CASES: list[tuple[str, dict[str, object], Setup, OrderRequest, OrderRequest, str]] = [
    ("quantity", {"max_order_quantity": "5"}, nothing, order("5"), order("5.1"), "MAX_ORDER_QUANTITY"),
    (
        "notional, limit order",
        {"max_order_notional": "500"},
        nothing,
        order("5", "100"),
        order("5", "100.01"),
        "MAX_ORDER_NOTIONAL",
    ),
    (
        "notional, market order at the ask",
        {"max_order_notional": "500.05"},
        nothing,
        order("5"),  # 5 x 100.01
        order("5.1"),
        "MAX_ORDER_NOTIONAL",
    ),
    (
        "price band %, above",
        {"price_band_pct": "5"},
        nothing,
        order("1", "105"),
        order("1", "105.01"),
        "PRICE_BAND",
    ),
    (
        "price band %, below",
        {"price_band_pct": "5"},
        nothing,
        order("1", "95"),
        order("1", "94.99"),
        "PRICE_BAND",
    ),
    (
        "price band in ticks",
        {"price_band_ticks": 10},
        nothing,
        order("1", "100.10"),
        order("1", "100.11"),
        "PRICE_BAND",
    ),
    (
        "open orders",
        {"max_open_orders": 3},
        open_orders(2),
        order("1", "90"),
        order("1", "90"),
        "MAX_OPEN_ORDERS",
    ),
    (
        "position, long",
        {"max_position": "10"},
        long_position("4"),
        order("6", "90"),
        order("6.1", "90"),
        "MAX_POSITION",
    ),
    (
        "position, short",
        {"max_position": "10"},
        long_position("4"),
        order("14", side=Side.SELL),
        order("14.1", side=Side.SELL),
        "MAX_POSITION",
    ),
    (
        "daily notional",
        {"max_daily_notional": "1000"},
        traded_notional("600"),
        order("4", "100"),
        order("4", "100.01"),
        "MAX_DAILY_NOTIONAL",
    ),
    (
        "daily loss",
        {"max_daily_loss": "100"},
        realised_loss("100"),
        order("1", "90"),
        order("1", "90"),
        "MAX_DAILY_LOSS",
    ),
    (
        "order-to-trade ratio",
        {"max_order_to_trade_ratio": "3"},
        lambda rig: [rig.fill(order("1", "90")) for _ in range(2)] and None,
        order("1", "90"),
        order("1", "90"),
        "ORDER_TO_TRADE_RATIO",
    ),
]


def _beyond_setup(name: str, setup: Setup) -> Setup:
    """For limits measured on state, 'one beyond' is one more unit of that state."""
    if name == "open orders":
        return open_orders(3)
    if name == "daily loss":
        return realised_loss("100.1")  # one lot (0.1 X) further at 1 USD
    if name == "order-to-trade ratio":
        return lambda rig: [rig.fill(order("1", "90")) for _ in range(3)] and None
    return setup


@pytest.mark.parametrize(
    ("name", "fields", "setup", "at", "beyond", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_each_limit_at_and_beyond_its_boundary(
    name: str,
    fields: dict[str, object],
    setup: Setup,
    at: OrderRequest,
    beyond: OrderRequest,
    reason: str,
) -> None:
    rig = Rig()
    setup(rig)
    assert isinstance(rig.place(policy(**fields), at), TrackedOrder), f"{name}: at the limit must pass"

    rig = Rig()
    _beyond_setup(name, setup)(rig)
    refused = rig.place(policy(**fields), beyond)
    assert isinstance(refused, Rejection), f"{name}: beyond the limit must be refused"
    assert (refused.code, refused.reason) == (ErrorCode.RISK_REJECTED, reason)


@pytest.mark.parametrize(
    ("fields", "request_", "reason"),
    [
        ({"symbols": ["Y-USD"]}, order("1"), "SYMBOL_NOT_ALLOWED"),
        ({"sides": ["sell"]}, order("1"), "SIDE_NOT_ALLOWED"),
        ({"order_types": ["limit"]}, order("1"), "ORDER_TYPE_NOT_ALLOWED"),
        ({"reduce_only": True}, order("1"), "REDUCE_ONLY"),
        ({"trading_windows": [{"start": "13:00", "end": "14:00"}]}, order("1"), "OUTSIDE_TRADING_WINDOW"),
        (
            {"trading_windows": [{"start": "09:00", "end": "17:00", "days": ["tue"]}]},
            order("1"),
            "OUTSIDE_TRADING_WINDOW",
        ),
    ],
)
def test_allow_lists_and_switches(fields: dict[str, object], request_: OrderRequest, reason: str) -> None:
    refused = Rig().place(policy(**fields), request_)
    assert isinstance(refused, Rejection) and refused.reason == reason
    assert isinstance(Rig().place(policy(), request_), TrackedOrder)  # and nothing else refuses it


def test_trading_windows_at_their_edges() -> None:
    window = {"trading_windows": [{"start": "12:00", "end": "12:30"}]}
    assert isinstance(Rig(MONDAY_NOON).place(policy(**window), order()), TrackedOrder)  # start is inclusive
    late = MONDAY_NOON + timedelta(minutes=30)
    refused = Rig(late).place(policy(**window), order())
    assert isinstance(refused, Rejection) and refused.reason == "OUTSIDE_TRADING_WINDOW"  # end is exclusive
    overnight = {"trading_windows": [{"start": "22:00", "end": "02:00", "days": ["sun"]}]}
    monday_1am = MONDAY_NOON.replace(hour=1)  # Sunday's window, after midnight
    assert isinstance(Rig(monday_1am).place(policy(**overnight), order()), TrackedOrder)
    assert isinstance(Rig(MONDAY_NOON.replace(hour=23)).place(policy(**overnight), order()), Rejection)


def test_instrument_rules_answer_like_the_venue() -> None:
    rig = Rig()
    for request, reason in (
        (order("0.15"), "LOT_SIZE"),
        (order("1", "100.001"), "TICK_SIZE"),
        (order("0.1", "5"), "MIN_NOTIONAL"),
        (order("1", symbol="Z-USD"), "UNKNOWN_SYMBOL"),
    ):
        refused = rig.place(policy(), request)
        assert isinstance(refused, Rejection) and (refused.code, refused.reason) == (
            ErrorCode.ORDER_REJECTED,
            reason,
        )


def test_no_reference_price_fails_closed() -> None:
    rig = Rig()
    market = FixedMarket(rig.now)
    del market.quotes["X-USD"]
    rig.engine = RiskEngine(rig.book, market)
    refused = rig.place(policy(), order())
    assert isinstance(refused, Rejection) and refused.reason == "NO_REFERENCE_PRICE"


def test_halted_refuses_everything_and_reducing_only_what_grows_the_position() -> None:
    rig = Rig()
    long_position("3")(rig)
    halted = rig.place(policy(), order("1", side=Side.SELL), TradingState.HALTED)
    assert isinstance(halted, Rejection) and halted.reason == "TRADING_HALTED"
    grows = rig.place(policy(), order("1"), TradingState.REDUCING)
    assert isinstance(grows, Rejection) and grows.reason == "REDUCE_ONLY"
    too_big = rig.place(policy(), order("3.1", side=Side.SELL), TradingState.REDUCING)
    assert isinstance(too_big, Rejection) and too_big.reason == "REDUCE_ONLY"  # would flip to short
    assert isinstance(rig.place(policy(), order("2", side=Side.SELL), TradingState.REDUCING), TrackedOrder)
    # the open sell of 2 counts: only 1 more may be sold
    assert isinstance(rig.place(policy(), order("1.1", side=Side.SELL), TradingState.REDUCING), Rejection)
    assert isinstance(rig.place(policy(), order("1", side=Side.SELL), TradingState.REDUCING), TrackedOrder)


def test_a_reducing_order_passes_the_daily_loss_limit() -> None:
    rig = Rig()
    realised_loss("200")(rig)
    long_position("2")(rig)
    p = policy(max_daily_loss="100")
    assert isinstance(rig.place(p, order("1")), Rejection)
    assert isinstance(rig.place(p, order("1", side=Side.SELL)), TrackedOrder)


def test_order_rate_is_a_token_bucket() -> None:
    rig = Rig()
    p = policy(orders_per_second="2")
    assert isinstance(rig.place(p, order()), TrackedOrder)
    assert isinstance(rig.place(p, order()), TrackedOrder)
    refused = rig.place(p, order())
    assert isinstance(refused, Rejection) and refused.reason == "ORDER_RATE"
    rig.now += timedelta(seconds=0.5)  # one token back
    assert isinstance(rig.place(p, order()), TrackedOrder)
    assert isinstance(rig.place(p, order()), Rejection)


def test_cancel_rate_and_cancels_in_any_state() -> None:
    rig = Rig()
    assert rig.engine.cancel("bst_k", policy(), rig.now) is None  # no limit: always
    p = policy(cancels_per_second="1")
    assert rig.engine.cancel("bst_k", p, rig.now) is None
    refused = rig.engine.cancel("bst_k", p, rig.now)
    assert refused is not None and refused.reason == "CANCEL_RATE"
    assert rig.engine.cancel("bst_k", p, rig.now + timedelta(seconds=1)) is None


def test_a_refused_order_reserves_nothing() -> None:
    rig = Rig()
    p = policy(max_open_orders=1, max_order_quantity="1")
    assert isinstance(rig.place(p, order("2", "90")), Rejection)
    assert isinstance(rig.place(p, order("1", "90")), TrackedOrder)  # the refusal held no slot


def test_limits_are_per_key_and_positions_per_account() -> None:
    rig = Rig()
    p = policy(max_open_orders=1, max_position="5")
    assert isinstance(
        rig.engine.place("bst_a", "alice", p, TradingState.ACTIVE, order("3", "90"), rig.now), TrackedOrder
    )
    # another key of the same account: its own open-order count, but the account's position exposure
    other = rig.engine.place("bst_b", "alice", p, TradingState.ACTIVE, order("3", "90"), rig.now)
    assert isinstance(other, Rejection) and other.reason == "MAX_POSITION"
    assert isinstance(
        rig.engine.place("bst_b", "alice", p, TradingState.ACTIVE, order("2", "90"), rig.now), TrackedOrder
    )
    bob = rig.engine.place("bst_c", "bob", p, TradingState.ACTIVE, order("5", "90"), rig.now)
    assert isinstance(bob, TrackedOrder)


def test_a_new_day_resets_daily_limits_but_not_positions() -> None:
    rig = Rig()
    traded_notional("1000")(rig)
    p = policy(max_daily_notional="1000", max_position="12")
    assert isinstance(rig.place(p, order("1", "90")), Rejection)
    rig.now += timedelta(days=1)
    assert isinstance(rig.place(p, order("1", "90")), TrackedOrder)
    refused = rig.place(p, order("2", "90"))  # 10 held + 1 open + 2 > 12
    assert isinstance(refused, Rejection) and refused.reason == "MAX_POSITION"
