from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.domain.instruments import AssetClass, Instrument
from bastion.domain.money import DecimalFormatError, format_decimal, is_multiple, parse_decimal
from bastion.domain.orders import OrderRequest, OrderType, Side, TimeInForce


@pytest.mark.parametrize("text", ["0", "1", "12.5", "0.000000000000000001", "99999999999999999999.5"])
def test_parses_plain_decimals(text: str) -> None:
    assert parse_decimal(text) == Decimal(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        "1e5",
        "1E5",
        "NaN",
        "Infinity",
        "01",
        "1.",
        ".5",
        " 1",
        "1 ",
        "1.0000000000000000001",
        "123456789012345678901",
        "١",
    ],
)
def test_refuses_everything_else(text: str) -> None:
    with pytest.raises(DecimalFormatError):
        parse_decimal(text)


@given(st.text(max_size=50))
def test_parser_raises_only_its_error(text: str) -> None:
    try:
        value = parse_decimal(text)
    except DecimalFormatError:
        return
    assert value >= 0 and value.is_finite()


@given(st.decimals(min_value=0, max_value=10**15, places=8, allow_nan=False, allow_infinity=False))
def test_format_round_trips(value: Decimal) -> None:
    assert parse_decimal(format_decimal(value)) == value


def test_multiples() -> None:
    assert is_multiple(Decimal("0.03"), Decimal("0.01"))
    assert not is_multiple(Decimal("0.035"), Decimal("0.01"))
    assert not is_multiple(Decimal("1"), Decimal("0"))


INSTRUMENT = Instrument(
    "X-USD", "X", "USD", AssetClass.CRYPTO, Decimal("0.01"), Decimal("0.001"), Decimal("10")
)


@pytest.mark.parametrize(
    ("quantity", "price", "reason"),
    [
        ("1", "10.00", None),
        ("0.001", "10000", None),  # exactly the minimum notional
        ("0.0015", "10", "LOT_SIZE"),
        ("0", "10", "LOT_SIZE"),
        ("1", "10.001", "TICK_SIZE"),
        ("0.999", "10", "MIN_NOTIONAL"),  # 9.99 < 10
    ],
)
def test_instrument_rules_at_their_boundaries(quantity: str, price: str, reason: str | None) -> None:
    assert INSTRUMENT.check(Decimal(quantity), Decimal(price), Decimal("1")) == reason


def test_market_orders_use_the_reference_for_notional() -> None:
    assert INSTRUMENT.check(Decimal("1"), None, Decimal("9.99")) == "MIN_NOTIONAL"
    assert INSTRUMENT.check(Decimal("1"), None, Decimal("10")) is None


def test_fingerprint_changes_with_any_parameter() -> None:
    base = OrderRequest(
        "c1", "X-USD", Side.BUY, OrderType.LIMIT, Decimal("1"), Decimal("10"), TimeInForce.GTC
    )
    same = OrderRequest(
        "c1", "X-USD", Side.BUY, OrderType.LIMIT, Decimal("1.0"), Decimal("10.00"), TimeInForce.GTC
    )
    assert base.fingerprint() == same.fingerprint()
    variants = [
        OrderRequest("c1", "X-USD", Side.SELL, OrderType.LIMIT, Decimal("1"), Decimal("10"), TimeInForce.GTC),
        OrderRequest("c1", "X-USD", Side.BUY, OrderType.LIMIT, Decimal("2"), Decimal("10"), TimeInForce.GTC),
        OrderRequest("c1", "X-USD", Side.BUY, OrderType.LIMIT, Decimal("1"), Decimal("11"), TimeInForce.GTC),
        OrderRequest("c1", "X-USD", Side.BUY, OrderType.LIMIT, Decimal("1"), Decimal("10"), TimeInForce.IOC),
        OrderRequest("c1", "Y-USD", Side.BUY, OrderType.LIMIT, Decimal("1"), Decimal("10"), TimeInForce.GTC),
    ]
    assert len({v.fingerprint() for v in variants} | {base.fingerprint()}) == 6
