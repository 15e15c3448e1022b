"""OWASP API3:2023 Broken Object Property Level Authorization, against a real server.

Two halves. Mass assignment: an order body setting properties only Bastion may set
(``status``, ``filled_quantity``, ``account``, ``fees``, ``id``, ``venue_order_id``,
``created_at`` and the rest of the answer's fields), in other spellings, wrapped, with wrong
types or given twice, must be ``400 BAD_REQUEST`` from the firewall with nothing placed.
Excessive exposure: every answer's keys are exactly those docs/api.md names, carry no other
account's data, no internal ids and no secret, and refusals never echo the input.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import pytest

from tests.security.conftest import (
    ORDER,
    Target,
    assert_no_secret,
    assert_refused,
    entries_since,
    signed_raw,
    snapshot,
    unchanged,
)

pytestmark = pytest.mark.e2e

# docs/api.md: "An order answer carries ...", plus `label` and (new orders and cancels) `receipt`
ORDER_KEYS = {
    "id",
    "client_order_id",
    "symbol",
    "side",
    "type",
    "time_in_force",
    "quantity",
    "price",
    "status",
    "filled_quantity",
    "average_price",
    "reject_reason",
    "created_at",
    "updated_at",
    "fills",
    "label",
    "receipt",
}
FILL_KEYS = {"price", "quantity", "time"}
RECEIPT_KEYS = {"index", "leaf_hash", "tree_head"}
HEAD_KEYS = {"tree_size", "root_hash", "timestamp", "signature", "key_version"}
# every header an answer may carry; anything else would be a leak
HEADERS = {
    "date",
    "content-length",
    "content-type",
    "x-request-id",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "retry-after",
    "strict-transport-security",
    "x-content-type-options",
    "cache-control",
    "content-security-policy",
    "referrer-policy",
    "x-frame-options",
}
# Properties of an order answer (and of the stored order) that only Bastion sets.
READ_ONLY = {
    "status": "filled",
    "filled_quantity": "1",
    "account": "bob",
    "fees": "0",
    "id": "ord_" + "A" * 24,
    "venue_order_id": "P000000000001",
    "created_at": "2020-01-01T00:00:00Z",
    "updated_at": "2020-01-01T00:00:00Z",
    "average_price": "0.01",
    "reject_reason": None,
    "fills": [{"price": "0.01", "quantity": "1", "time": "2020-01-01T00:00:00Z"}],
    "receipt": {"index": 0},
    "key_id": "bst_x",
    "owner": "bob",
    "scopes": ["read", "trade", "cancel", "withdraw"],
}


def cid(prefix: str) -> str:
    return f"{prefix}-{time.time_ns() % 10**12}"


def order_body(**extra: Any) -> bytes:
    return json.dumps(dict(ORDER, client_order_id=cid("prop")) | extra).encode()


def test_read_only_properties_cannot_be_set(target: Target) -> None:
    with unchanged(target):
        for name, value in READ_ONLY.items():
            for who in ("alice", "alice_hmac"):
                response = target.call(
                    who, "POST", "/v1/orders", dict(ORDER, client_order_id=cid(name)) | {name: value}
                )
                reason = f"unknown field `{name}`"
                assert_refused(response, 400, "BAD_REQUEST", "firewall", reason=reason)


def test_other_spellings_of_a_property_are_unknown_too(target: Target) -> None:
    spellings = [
        b'"Status": "filled"',
        b'"STATUS": "filled"',
        b'"status ": "filled"',
        b'"filled-quantity": "1"',
        b'"\\u0061ccount": "bob"',  # a JSON escape of "account"
        b'"account\\u0000": "bob"',
        b'"__proto__": {"account": "bob"}',
        b'"constructor": {"prototype": {"status": "filled"}}',
    ]
    with unchanged(target):
        for extra in spellings:
            body = order_body()[:-1] + b", " + extra + b"}"
            response = signed_raw(target, "alice", "POST", "/v1/orders", body=body)
            assert_refused(response, 400, "BAD_REQUEST", "firewall", reason="unknown field")


def test_wrapped_and_nested_assignments_are_refused(target: Target) -> None:
    cases = [
        ({"order": dict(ORDER, client_order_id=cid("wrap"))}, "unknown field `order`"),
        ([dict(ORDER, client_order_id=cid("list"))], "Expected `object`, got `array`"),
        (dict(ORDER, client_order_id=cid("meta"), meta={"account": "bob"}), "unknown field `meta`"),
        (dict(ORDER, client_order_id=cid("data"), data={"status": "filled"}), "unknown field `data`"),
        ({"client_order_id": cid("only")}, "missing required field"),
        ("an order", "Expected `object`, got `str`"),
    ]
    with unchanged(target):
        for body, reason in cases:
            response = target.call("alice", "POST", "/v1/orders", body)
            assert_refused(response, 400, "BAD_REQUEST", "firewall", reason=reason)


def test_settable_properties_take_only_their_type(target: Target) -> None:
    cases: list[dict[str, Any]] = [
        {"quantity": 1},
        {"price": 1.0},
        {"price": {"value": "1.00"}},
        {"side": ["buy", "sell"]},
        {"side": "BUY"},
        {"type": "stop"},
        {"time_in_force": "GTC"},
        {"symbol": "goog"},
        {"symbol": "GOOG;DROP"},
        {"client_order_id": ""},
        {"client_order_id": "a" * 37},
        {"label": 5},
        {"quantity": "-1"},
        {"quantity": "01"},
        {"price": "1.0000000000000000001"},
    ]
    with unchanged(target):
        for change in cases:
            response = target.call(
                "alice", "POST", "/v1/orders", {**ORDER, "client_order_id": cid("type"), **change}
            )
            assert_refused(response, 400, "BAD_REQUEST", "firewall", reason="body:")


def test_a_property_given_twice_is_refused(target: Target) -> None:
    client_id = cid("twice")
    placed: list[str] = []
    body = order_body(client_order_id=client_id)[:-1] + b', "price": "2.00"}'  # price: "1.00", then "2.00"
    try:
        with unchanged(target):
            response = signed_raw(target, "alice", "POST", "/v1/orders", body=body)
            if response.status in (200, 201):
                placed.append(response.body["id"])
            assert_refused(response, 400, "BAD_REQUEST", "firewall")
    finally:
        for order_id in placed:
            assert target.call("alice", "DELETE", f"/v1/orders/{order_id}").status == 200


def test_query_parameters_cannot_widen_an_answer(target: Target) -> None:
    queries = [
        "fields=venue_order_id",
        "include=account",
        "expand=fills,account",
        "status=all&with=key_id",
        "debug=1",
        "select=*",
    ]
    with unchanged(target):
        for query in queries:
            response = target.call("alice", "GET", "/v1/orders", query=query)
            assert_refused(response, 400, "BAD_REQUEST", "firewall", reason="unknown field")
        response = target.call(
            "alice", "GET", f"/v1/orders/{target.order_ids['alice_open']}", query="fields=all"
        )
        assert_refused(
            response, 400, "BAD_REQUEST", "firewall", reason="query string on a route that takes none"
        )


def check_order(view: dict[str, Any], *, receipt: bool) -> None:
    assert set(view) == ORDER_KEYS, set(view) ^ ORDER_KEYS
    assert view["id"].startswith("ord_")
    for fill in view["fills"]:
        assert set(fill) == FILL_KEYS
    if receipt:
        assert set(view["receipt"]) == RECEIPT_KEYS and set(view["receipt"]["tree_head"]) == HEAD_KEYS
    else:
        assert view["receipt"] is None


def test_every_answer_has_exactly_its_documented_keys(target: Target) -> None:
    """Place, read, list and cancel (alice's own, far below the market), the account, the
    markets, a ticker and the ledger's routes: exact key sets, header names, no secret."""
    placed = target.call(
        "alice", "POST", "/v1/orders", dict(ORDER, client_order_id=cid("keys"), label="keys")
    )
    assert placed.status == 201
    check_order(placed.body, receipt=True)
    order_id = placed.body["id"]
    fetched = target.call("alice", "GET", f"/v1/orders/{order_id}")
    check_order(fetched.body, receipt=False)
    filled = target.call("bob", "GET", f"/v1/orders/{target.order_ids['bob_filled']}")
    check_order(filled.body, receipt=False)
    assert filled.body["fills"]
    listed = target.call("alice", "GET", "/v1/orders", query="status=all&limit=500")
    assert set(listed.body) == {"orders"}
    for view in listed.body["orders"]:
        check_order(view, receipt=False)
    canceled = target.call("alice", "DELETE", f"/v1/orders/{order_id}")
    assert canceled.status == 200
    check_order(canceled.body, receipt=True)
    account = target.call("alice", "GET", "/v1/account")
    assert set(account.body) == {"account", "balances"} and account.body["account"] == "alice"
    assert all(set(b) == {"asset", "free", "locked"} for b in account.body["balances"])
    markets = target.call("alice", "GET", "/v1/markets")
    market_keys = {"symbol", "base", "quote", "asset_class", "tick_size", "lot_size", "min_notional"}
    assert set(markets.body) == {"markets"} and all(set(m) == market_keys for m in markets.body["markets"])
    ticker = target.call("alice", "GET", "/v1/markets/GOOG/ticker")
    assert set(ticker.body) == {"symbol", "bid", "ask", "last", "time"}
    head = target.call("alice", "GET", "/v1/ledger/head")
    assert set(head.body) == HEAD_KEYS
    size = head.body["tree_size"]
    proof = target.call(
        "alice",
        "GET",
        f"/v1/ledger/entries/{target.entry_index['alice_order']}/proof",
        query=f"tree_size={size}",
    )
    assert set(proof.body) == {"index", "tree_size", "leaf_hash", "proof", "entry"}
    consistency = target.call("alice", "GET", "/v1/ledger/consistency", query=f"first=1&second={size}")
    assert set(consistency.body) == {"first", "second", "proof"}
    answers = [placed, fetched, filled, listed, canceled, account, markets, ticker, head, proof, consistency]
    for response in answers:
        assert response.status in (200, 201), response.body
        assert set(response.headers) <= HEADERS, set(response.headers) - HEADERS
        assert b"venue_order_id" not in response.raw and b"key_id" not in response.raw
        assert b'"account"' not in response.raw or response is account
    assert_no_secret(target, *answers)


def test_answers_carry_nothing_of_another_account(target: Target) -> None:
    state = snapshot(target)
    own_client_ids = {o["client_order_id"] for o in state["alice"]["orders"]}
    markers = {o["id"] for o in state["bob"]["orders"]}  # bob's order ids, his key id, his name
    markers |= {o["client_order_id"] for o in state["bob"]["orders"]} - own_client_ids
    markers |= {target.keys["bob"].key_id, '"bob"'}
    with unchanged(target) as watch:
        answers = [
            watch.allow(target.call("alice", "GET", "/v1/orders", query="status=all&limit=500")),
            watch.allow(target.call("alice", "GET", "/v1/account")),
            watch.allow(target.call("alice", "GET", f"/v1/orders/{target.order_ids['alice_open']}")),
            watch.allow(target.call("alice_hmac", "GET", "/v1/orders", query="status=all&limit=500")),
            watch.allow(target.call("alice", "GET", "/v1/ledger/head")),
        ]
        for response in answers:
            assert response.status == 200
            for marker in markers:
                assert marker.encode() not in response.raw, marker
        assert_no_secret(target, *answers)


def test_ledger_proofs_of_alices_entries_hold_no_secret(target: Target) -> None:
    """A proof returns the entry's bytes: for each kind of alice's entries (her account, her
    keys, her venue credential, her orders, her requests) they open to no secret."""
    entries = entries_since(target, 0)
    size = len(entries)
    firsts: dict[str, int] = {}
    for n, entry in enumerate(entries):
        if entry["data"].get("account") == "alice":
            firsts.setdefault(entry["kind"], n)
    assert {"account.created", "key.created", "credential.added", "order.submit", "request"} <= set(firsts)
    with unchanged(target) as watch:
        for index in firsts.values():
            proof = watch.allow(
                target.call("alice", "GET", f"/v1/ledger/entries/{index}/proof", query=f"tree_size={size}")
            )
            assert proof.status == 200, proof.body
            opened = base64.b64decode(proof.body["entry"])
            assert json.loads(opened)["data"]["account"] == "alice"
            for name, value in target.secrets.items():
                assert value not in opened, name
            assert b"PRIVATE KEY" not in opened and b"bsk_" not in opened


def test_refusals_never_echo_the_input(target: Target) -> None:
    marker = "zz" + secrets.token_hex(8)
    with unchanged(target):
        bodies = [
            dict(ORDER, client_order_id=cid("echo")) | {marker: marker},
            dict(ORDER, client_order_id=cid("echo"), symbol=marker.upper() + "!"),
            dict(ORDER, client_order_id=cid("echo"), label=f"<script>{marker}</script>"),
        ]
        for body in bodies:
            response = target.call("alice", "POST", "/v1/orders", body)
            entry = assert_refused(response, 400, "BAD_REQUEST", "firewall")
            assert marker.encode() not in response.raw.lower() and b"script" not in response.raw
            assert set(response.body["error"]) == {"code", "message", "request_id"}
            assert entry["reason"]  # the detail is in the ledger
        response = target.call("alice", "GET", "/v1/orders", query=f"{marker}=1")
        assert_refused(response, 400, "BAD_REQUEST", "firewall", reason=marker)
        assert marker.encode() not in response.raw
        response = target.call("alice", "GET", f"/v1/{marker}")
        assert_refused(response, 404, "NOT_FOUND", "edge")
        assert marker.encode() not in response.raw
