from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.venues.paper.data import BarFormatError, load_series, parse_ohlc_csv


def test_parses_backtesting_style_csv() -> None:
    bars = parse_ohlc_csv(",Open,High,Low,Close,Volume\n2020-01-01,1.0,2.0,0.5,1.5,100\n")
    assert len(bars) == 1
    assert bars[0].close == Decimal("1.5")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Date,Price\n2020,1",
        ",Open,High,Low,Close\n2020,1,2,0.5",
        ",Open,High,Low,Close\n2020,1,0.9,0.5,1",  # high below open
        ",Open,High,Low,Close\n2020,1,2,0.5,-1",
        ",Open,High,Low,Close\n2020,1,2,0.5,nan",
        ",Open,High,Low,Close\n",
    ],
)
def test_refuses_malformed_files(text: str) -> None:
    with pytest.raises(BarFormatError):
        parse_ohlc_csv(text)


@given(st.text(max_size=300))
def test_parser_raises_only_its_error(text: str) -> None:
    with contextlib.suppress(BarFormatError):
        parse_ohlc_csv(text)


@pytest.mark.parametrize(("name", "count"), [("BTCUSD", 156), ("EURUSD", 5000), ("GOOG", 2148)])
def test_the_real_historical_series_load(name: str, count: int) -> None:
    bars = load_series(name)
    assert len(bars) == count
    assert all(b.low <= b.close <= b.high for b in bars)


def test_every_default_market_can_fill_its_smallest_order_on_every_bar() -> None:
    """Over the whole replay, twice the minimum notional fits inside the depth at the touch."""
    from bastion.venues.paper.venue import build_markets

    for market in build_markets().values():
        rules = market.instrument
        for b in market.bars:
            quantity = ((2 * rules.min_notional / b.low) / rules.lot_size).to_integral_value(
                rounding="ROUND_CEILING"
            ) * rules.lot_size
            assert quantity <= market.depth, (rules.symbol, b)
