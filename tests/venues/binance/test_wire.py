"""The Binance wire parsers: known answers, and fuzzing (untrusted bytes from the venue)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.domain.instruments import AssetClass, Instrument
from bastion.domain.orders import OrderStatus, OrderType, Side
from bastion.venues.binance import wire

NOW = datetime(2026, 12, 1, tzinfo=UTC)
BTC = Instrument(
    "BTC-USDT", "BTC", "USDT", AssetClass.CRYPTO, Decimal("0.01"), Decimal("0.00001"), Decimal("5")
)


def answer(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "orderId": 28,
        "clientOrderId": "bot-1",
        "transactTime": 1_767_225_600_000,
        "price": "50000.00000000",
        "origQty": "0.00200000",
        "executedQty": "0.00200000",
        "cummulativeQuoteQty": "99.99000000",
        "status": "FILLED",
        "timeInForce": "GTC",
        "type": "LIMIT",
        "side": "BUY",
        "fills": [
            {"price": "49990.00000000", "qty": "0.00100000", "commission": "0", "commissionAsset": "BNB"},
            {"price": "50000.00000000", "qty": "0.00100000", "commission": "0", "commissionAsset": "BNB"},
        ],
    }
    body.update(changes)
    return body


def parse(body: dict[str, Any]) -> Any:
    return wire.order_from(wire.decode(json.dumps(body).encode(), wire.WireOrder), BTC, NOW)


def test_a_documented_full_answer_becomes_a_domain_order() -> None:
    order = parse(answer())
    assert order.venue_order_id == "BTCUSDT:28" and order.symbol == "BTC-USDT"
    assert (order.side, order.type, order.status) == (Side.BUY, OrderType.LIMIT, OrderStatus.FILLED)
    assert order.average_price == Decimal("49995")
    assert [f.quantity for f in order.fills] == [Decimal("0.001"), Decimal("0.001")]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"executedQty": "0.003"}, "VENUE_OVERFILLED"),
        ({"status": "NEW"}, "VENUE_STATUS_INCONSISTENT"),
        ({"status": "PENDING_NEW_THING"}, "VENUE_ENUM_INVALID"),
        ({"side": "buy"}, "VENUE_ENUM_INVALID"),
        ({"price": "-1"}, "VENUE_NUMBER_INVALID"),
        ({"origQty": "1e3"}, "VENUE_NUMBER_INVALID"),
        ({"origQty": "NaN"}, "VENUE_NUMBER_INVALID"),
        ({"origQty": "0"}, "VENUE_NUMBER_INVALID"),
        ({"price": "40000.00"}, "VENUE_FILL_OUTSIDE_LIMIT"),
        ({"fills": [{"price": "50000", "qty": "0.001"}]}, "VENUE_FILLS_INCONSISTENT"),
        ({"cummulativeQuoteQty": "0"}, "VENUE_STATUS_INCONSISTENT"),
        ({"cummulativeQuoteQty": "150"}, "VENUE_FILL_OUTSIDE_LIMIT"),
        ({"transactTime": 10**16}, "VENUE_TIME_INVALID"),
        ({"symbol": "btc/usdt"}, "VENUE_SYMBOL_INVALID"),
        ({"orderId": -1}, "VENUE_ANSWER_MALFORMED"),
        ({"orderId": 2**64}, "VENUE_ANSWER_MALFORMED"),
        ({"orderId": "28"}, "VENUE_ANSWER_MALFORMED"),
        ({"clientOrderId": "x" * 65}, "VENUE_ANSWER_MALFORMED"),
        ({"origQty": "9" * 60}, "VENUE_ANSWER_MALFORMED"),
        ({"fills": [{"price": "1", "qty": "1"}] * 1001}, "VENUE_ANSWER_MALFORMED"),
    ],
)
def test_an_answer_outside_the_contract_is_refused_with_its_reason(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(wire.AnswerInvalid) as refused:
        parse(answer(**changes))
    assert refused.value.reason == reason


def test_a_sell_filled_below_its_limit_is_refused() -> None:
    body = answer(side="SELL", price="50000.00", fills=[{"price": "49000", "qty": "0.002"}])
    body["cummulativeQuoteQty"] = "98"
    with pytest.raises(wire.AnswerInvalid, match="VENUE_FILL_OUTSIDE_LIMIT"):
        parse(body)


def test_an_answer_about_another_order_is_refused() -> None:
    order = parse(answer())
    with pytest.raises(wire.AnswerInvalid, match="VENUE_ANSWER_MISMATCH"):
        wire.check_same(order, "BTCUSDT:29")


def test_exchange_info_without_readable_rules_leaves_the_symbol_out() -> None:
    info = {
        "symbols": [
            {
                "symbol": "BTCUSDT",
                "status": "TRADING",
                "baseAsset": "BTC",
                "quoteAsset": "USDT",
                "filters": [],
            },
            {
                "symbol": "ETHUSDT",
                "status": "BREAK",
                "baseAsset": "ETH",
                "quoteAsset": "USDT",
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": "0.01"},
                    {"filterType": "LOT_SIZE", "stepSize": "0.0001"},
                ],
            },
        ]
    }
    parsed = wire.decode(json.dumps(info).encode(), wire.WireExchangeInfo)
    assert wire.instruments_from(parsed, frozenset({"BTCUSDT", "ETHUSDT"})) == {}


def test_a_ticker_is_stamped_with_our_clock_and_a_crossed_one_refused() -> None:
    good = wire.WireTicker("BTCUSDT", "1.00", "1.01", "1.005", "100")
    ticker, volume = wire.ticker_from(good, BTC, NOW)
    assert ticker.time == NOW and volume == Decimal(100)
    with pytest.raises(wire.AnswerInvalid, match="VENUE_BOOK_CROSSED"):
        wire.ticker_from(wire.WireTicker("BTCUSDT", "1.02", "1.01", "1.005", "100"), BTC, NOW)


def test_venue_order_ids_are_split_strictly() -> None:
    assert wire.split_venue_order_id("BTCUSDT:28") == ("BTCUSDT", "28")
    for bad in (
        "BTCUSDT",
        "BTCUSDT:",
        "btc:1",
        "BTCUSDT:1:2",
        "BTCUSDT:-1",
        "BTCUSDT:" + "9" * 20,
        "BTCUSDT:\u0661\u0662",
    ):
        with pytest.raises(wire.AnswerInvalid):
            wire.split_venue_order_id(bad)


# -- fuzzing -----------------------------------------------------------------------------------
STRUCTS = (wire.WireOrder, wire.WireExchangeInfo, wire.WireAccount, wire.WireError, list[wire.WireTicker])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(STRUCTS))
def test_any_bytes_decode_or_are_refused_as_malformed(raw: bytes, into: Any) -> None:
    try:
        wire.decode(raw, into)
    except wire.AnswerInvalid as exc:
        assert exc.reason == "VENUE_ANSWER_MALFORMED"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30) | st.floats(allow_nan=True),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
numbers = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-10, max_value=10**6).map(str),
    st.sampled_from(["0", "1e5", "NaN", "-0", "", "0.000000001", "1" * 30, "1.", ".5"]),
    st.text(max_size=12),
)
fields = {
    "symbol": st.sampled_from(["BTCUSDT", "", "btc", "X" * 30]),
    "orderId": st.integers(min_value=-5, max_value=2**64),
    "price": numbers,
    "origQty": numbers,
    "executedQty": numbers,
    "cummulativeQuoteQty": numbers,
    "status": st.sampled_from(
        ["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "PENDING_CANCEL", ""]
    ),
    "side": st.sampled_from(["BUY", "SELL", "HOLD"]),
    "type": st.sampled_from(["LIMIT", "MARKET", "STOP_LOSS"]),
    "transactTime": st.integers(min_value=-1, max_value=10**16),
    "fills": st.lists(st.fixed_dictionaries({"price": numbers, "qty": numbers}), max_size=4),
}


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries({}, optional={**fields, "extra": json_values}))
def test_any_order_answer_is_refused_or_keeps_every_invariant(changes: dict[str, Any]) -> None:
    try:
        order = parse(answer(**changes))
    except wire.AnswerInvalid:
        return
    except (ValueError, msgspec.ValidationError) as exc:  # the finding this test is for
        raise AssertionError(f"escaped the boundary: {exc!r}") from exc
    assert Decimal(0) <= order.filled_quantity <= order.quantity
    assert order.quantity > 0
    if order.status is OrderStatus.FILLED:
        assert order.filled_quantity == order.quantity
    if order.fills:
        assert sum(f.quantity for f in order.fills) == order.filled_quantity
    if order.type is OrderType.LIMIT and order.average_price is not None:
        assert order.price is not None
        assert (
            order.average_price <= order.price
            if order.side is Side.BUY
            else order.average_price >= order.price
        )
