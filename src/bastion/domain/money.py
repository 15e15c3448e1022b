"""Decimal money and quantities.  Floats never enter: values are parsed from strings only."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

# At most 20 integer digits and 18 fractional digits; no sign, exponent, NaN or infinity.
_DECIMAL_RE = re.compile(r"(?:0|[1-9][0-9]{0,19})(?:\.[0-9]{1,18})?")
ZERO = Decimal(0)


class DecimalFormatError(ValueError):
    """A decimal string is not in Bastion's strict format."""


def parse_decimal(text: str) -> Decimal:
    """Parse a non-negative decimal written as plain digits (``"12.50"``)."""
    if not isinstance(text, str) or _DECIMAL_RE.fullmatch(text) is None:
        raise DecimalFormatError("expected a non-negative decimal string such as '12.5'")
    return Decimal(text)


def format_decimal(value: Decimal) -> str:
    """Render without exponent and without trailing zeros beyond the value's own digits."""
    if value == ZERO:
        return "0"
    text = format(value.normalize(), "f")
    return text


def is_multiple(value: Decimal, step: Decimal) -> bool:
    """True when ``value`` is a whole number of ``step``."""
    return step > ZERO and (value % step) == ZERO


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step
