from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.domain.addresses import address_allowed, parse_cidrs


def test_canonical_blocks_and_single_hosts() -> None:
    assert parse_cidrs(["10.0.0.0/8", " 192.168.1.7", "2001:db8::/32", "10.0.0.0/8"]) == (
        "10.0.0.0/8",
        "192.168.1.7/32",
        "2001:db8::/32",
    )


@pytest.mark.parametrize("value", ["10.0.0.5/8", "300.1.1.1", "10.0.0.0/33", "any", "", "10.0.0.0/8;rm"])
def test_refuses_anything_else(value: str) -> None:
    with pytest.raises(ValueError, match="CIDR"):
        parse_cidrs([value])


@pytest.mark.parametrize(
    ("address", "cidrs", "allowed"),
    [
        ("127.0.0.1", (), True),
        ("127.0.0.1", ("127.0.0.0/8",), True),
        ("127.0.0.1", ("10.0.0.0/8",), False),
        ("::ffff:127.0.0.1", ("127.0.0.0/8",), True),
        ("2001:db8::1", ("2001:db8::/32",), True),
        ("2001:db8::1", ("127.0.0.0/8",), False),
        ("", ("127.0.0.0/8",), False),
        ("not-an-ip", ("127.0.0.0/8",), False),
    ],
)
def test_address_allowed(address: str, cidrs: tuple[str, ...], allowed: bool) -> None:
    assert address_allowed(address, cidrs) is allowed


@given(st.text(max_size=40))
def test_parser_raises_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_cidrs([text])
