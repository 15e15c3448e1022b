"""The client's address behind trusted proxies only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.http.forwarded import client_of, parse_networks

PROXY = parse_networks(["127.0.0.1/32", "10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "xff", "proto", "expected"),
    [
        ("127.0.0.1", ["203.0.113.9"], ["https"], ("203.0.113.9", "https")),
        ("127.0.0.1", ["198.51.100.1, 10.1.2.3"], None, ("198.51.100.1", None)),  # two proxies deep
        ("127.0.0.1", ["6.6.6.6, 203.0.113.9"], None, ("203.0.113.9", None)),  # the client forged the left
        ("127.0.0.1", ["203.0.113.9", "10.0.0.5"], None, ("203.0.113.9", None)),  # repeated header lines
        ("127.0.0.1", None, None, ("127.0.0.1", None)),
        ("127.0.0.1", ["not-an-ip"], None, ("127.0.0.1", None)),
        ("127.0.0.1", ["203.0.113.9, garbage"], None, ("127.0.0.1", None)),
        ("127.0.0.1", ["203.0.113.9"], ["gopher"], ("203.0.113.9", None)),
        ("192.0.2.50", ["203.0.113.9"], ["http"], ("192.0.2.50", None)),  # not a trusted peer
        ("127.0.0.1", ["2001:db8::1"], None, ("2001:db8::1", None)),
    ],
)
def test_forwarded_headers_are_believed_only_from_trusted_proxies(
    peer: str, xff: list[str] | None, proto: list[str] | None, expected: tuple[str, str | None]
) -> None:
    headers: dict[str, list[str]] = {}
    if xff is not None:
        headers["x-forwarded-for"] = xff
    if proto is not None:
        headers["x-forwarded-proto"] = proto
    assert client_of(peer, headers, PROXY) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_of("127.0.0.1", {"x-forwarded-for": ["203.0.113.9"]}, ()) == ("127.0.0.1", None)


@given(st.lists(st.text(max_size=40), max_size=4))
def test_any_header_yields_the_peer_or_an_address_in_the_header(values: list[str]) -> None:
    client, _ = client_of("127.0.0.1", {"x-forwarded-for": values}, PROXY)
    assert client == "127.0.0.1" or any(client in v for v in values)
