"""Policy documents: strict loading (refused whole, naming the field), merging, the effective policy."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.domain.orders import OrderType, Side
from bastion.domain.policy import (
    EMPTY,
    FIELDS,
    PolicyError,
    document_from,
    effective,
    merge,
    parse_document,
    to_mapping,
)
from bastion.domain.principals import Scope

YAML = """\
symbols: [BTC-USD, GOOG]
sides: [buy, sell]
order_types: [limit]
max_order_quantity: "2"
max_order_notional: "50000.50"
max_open_orders: 10
max_position: "5"
max_daily_notional: "1000000"
max_daily_loss: "2500"
price_band_pct: "2.5"
price_band_ticks: 40
orders_per_second: "5"
cancels_per_second: "10"
max_order_to_trade_ratio: "50"
trading_windows:
  - {start: "08:00", end: "17:30", days: [mon, tue, wed, thu, fri]}
reduce_only: false
rate_limit: {per_second: "2.5", burst: 10}
"""


def test_every_field_loads_from_yaml_and_json() -> None:
    doc = parse_document(YAML, filename="p.yaml")
    data = to_mapping(doc)
    assert set(data) == set(FIELDS) - {"scopes"}
    assert parse_document(__import__("json").dumps(data), filename="p.json") == doc
    policy = effective(frozenset(Scope), doc, None)
    assert policy.symbols == frozenset({"BTC-USD", "GOOG"}) and policy.order_types == frozenset(
        {OrderType.LIMIT}
    )
    assert policy.max_order_notional == D("50000.50") and policy.price_band_ticks == 40
    assert policy.sides == frozenset({Side.BUY, Side.SELL}) and policy.max_open_orders == 10
    assert policy.rate_limit == (2.5, 10)
    assert policy.in_window(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))  # a Monday
    assert not policy.in_window(datetime(2026, 1, 10, 9, 0, tzinfo=UTC))  # a Saturday


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"max_order_notional": 500}, "max_order_notional"),  # decimals are strings
        ({"max_order_notional": 0.5}, "max_order_notional"),
        ({"max_order_notional": "1e3"}, "max_order_notional"),
        ({"max_order_notional": "-5"}, "max_order_notional"),
        ({"max_order_notional": "0"}, "max_order_notional"),
        ({"max_open_orders": -1}, "max_open_orders"),
        ({"max_open_orders": "3"}, "max_open_orders"),
        ({"price_band_pct": "101"}, "price_band_pct"),
        ({"max_order_to_trade_ratio": "0.5"}, "max_order_to_trade_ratio"),
        ({"sides": ["long"]}, "sides"),
        ({"sides": []}, "sides"),
        ({"order_types": ["stop"]}, "order_types"),
        ({"symbols": ["btc-usd"]}, "symbols"),
        ({"symbols": ["GOOG", "GOOG"]}, "symbols"),
        ({"scopes": ["withdraw"]}, "scopes"),
        ({"scopes": ["read", "admin"]}, "scopes"),
        ({"withdrawals": True}, "withdrawals"),
        ({"max_transfer": "1"}, "max_transfer"),
        ({"max_order_size": "1"}, "max_order_size"),
        ({"trading_windows": [{"start": "25:00", "end": "10:00"}]}, "trading_windows"),
        ({"trading_windows": [{"start": "10:00", "end": "10:00"}]}, "trading_windows[0]"),
        (
            {"trading_windows": [{"start": "10:00", "end": "11:00", "days": ["mon", "mon"]}]},
            "trading_windows[0].days",
        ),
        ({"trading_windows": [{"start": "10:00", "end": "11:00", "tz": "CET"}]}, "trading_windows"),
        ({"reduce_only": "yes"}, "reduce_only"),
        ({"orders_per_second": "1000000"}, "orders_per_second"),
        ({"rate_limit": {"per_second": "5"}}, "rate_limit"),
        ({"rate_limit": {"per_second": "0", "burst": 3}}, "rate_limit.per_second"),
        ({"rate_limit": {"per_second": "5", "burst": 0}}, "rate_limit.burst"),
        ({"rate_limit": {"per_second": 5, "burst": 3}}, "rate_limit.per_second"),
    ],
)
def test_an_invalid_document_is_refused_naming_the_field(document: dict[str, object], field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        document_from(document)
    assert f"`{field}" in str(caught.value)


def test_whole_documents_are_refused_not_parts() -> None:
    with pytest.raises(PolicyError):
        parse_document('{"max_order_quantity": "1", "max_open_orders": "x"}')
    with pytest.raises(PolicyError, match="mapping"):
        parse_document("- a\n- b\n")
    with pytest.raises(PolicyError, match="YAML or JSON"):
        parse_document("{not json", filename="p.json")
    with pytest.raises(PolicyError, match="64 KiB"):
        parse_document(b"#" * 70_000)
    assert parse_document("") == EMPTY


def test_merge_keeps_absent_fields_and_null_removes() -> None:
    stored = document_from({"max_order_quantity": "1", "max_open_orders": 3, "symbols": ["GOOG"]})
    patch = parse_document('{"max_open_orders": 5, "symbols": null}')
    merged = merge(stored, patch)
    assert to_mapping(merged) == {"max_order_quantity": "1", "max_open_orders": 5}


def test_the_key_overrides_its_account_and_the_account_caps_scopes() -> None:
    account = document_from({"scopes": ["read", "trade"], "max_order_quantity": "10", "max_open_orders": 3})
    key = document_from({"max_order_quantity": "2"})
    policy = effective(frozenset({Scope.READ, Scope.TRADE, Scope.CANCEL}), account, key, (4, 7))
    assert policy.scopes == frozenset({Scope.READ, Scope.TRADE})
    assert (policy.max_order_quantity, policy.max_open_orders, policy.versions) == (D(2), 3, (4, 7))
    assert effective(frozenset({Scope.READ}), None, None).max_order_quantity is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from([*FIELDS, "other", "withdraw"]), json_values, max_size=6))
def test_the_loader_only_ever_accepts_or_refuses(document: dict[str, object]) -> None:
    """Fuzz: any decoded document is either valid (and its stored form round-trips) or a PolicyError."""
    try:
        doc = document_from(document)
    except PolicyError as exc:
        assert str(exc)
        return
    stored = to_mapping(doc)  # what the store keeps: the set fields (nulls only mean "remove")
    assert to_mapping(document_from(stored)) == stored


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_the_parser_of_untrusted_bytes_never_crashes(raw: bytes | str) -> None:
    try:
        doc = parse_document(raw)
    except PolicyError as exc:
        assert str(exc)  # refused, with a message
    else:
        assert to_mapping(document_from(to_mapping(doc))) == to_mapping(doc)
