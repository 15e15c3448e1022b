"""Historical OHLC bars for the paper venue.

The default series are the CSV files shipped in the ``backtesting`` package (install the
``paper`` extra): BTCUSD monthly 2012–2024, EURUSD hourly 2017–2018, GOOG daily 2004–2013.
That package is AGPL-3.0, so Bastion neither imports nor ships it: it only reads those data
files at run time from the installed distribution.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from bastion.errors import ConfigError

_MAX_BARS = 100_000


@dataclass(frozen=True, slots=True)
class Bar:
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


class BarFormatError(ValueError):
    """A price file is not the expected OHLC CSV."""


def _price(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise BarFormatError(f"not a price: {text[:20]!r}") from None
    if not value.is_finite() or value <= 0:
        raise BarFormatError(f"not a positive price: {text[:20]!r}")
    return value


def parse_ohlc_csv(text: str) -> list[Bar]:
    """Parse ``,Open,High,Low,Close[,Volume]`` CSV (first column a date) into bars."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise BarFormatError("empty price file")
    header = [h.strip().lower() for h in lines[0].split(",")]
    try:
        cols = [header.index(name) for name in ("open", "high", "low", "close")]
    except ValueError:
        raise BarFormatError("header lacks Open, High, Low, Close") from None
    bars: list[Bar] = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split(",")
        if len(fields) != len(header):
            raise BarFormatError(f"line {number}: expected {len(header)} fields")
        o, h, lo, c = (_price(fields[i]) for i in cols)
        if not (lo <= min(o, c) and h >= max(o, c)):
            raise BarFormatError(f"line {number}: high/low do not bound open/close")
        bars.append(Bar(o, h, lo, c))
        if len(bars) > _MAX_BARS:
            raise BarFormatError("too many bars")
    if not bars:
        raise BarFormatError("no bars")
    return bars


def backtesting_file(name: str) -> Path:
    """Path of a CSV shipped by the ``backtesting`` distribution, without importing it."""
    try:
        dist = importlib.metadata.distribution("backtesting")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            "the paper venue needs historical prices: install the 'paper' extra "
            "(pip install 'bastion-gateway[paper]')"
        ) from None
    path = Path(str(dist.locate_file(f"backtesting/test/{name}.csv")))
    if not path.is_file():
        raise ConfigError(f"price file {name}.csv not found in the installed backtesting package")
    return path


def load_series(name: str) -> list[Bar]:
    return parse_ohlc_csv(backtesting_file(name).read_text(encoding="ascii"))
