"""OWASP API1:2023 Broken Object Level Authorization, against a real server.

Alice holds valid keys and attacks bob's objects: his orders by their real ids (read and
cancel, with Ed25519 and HMAC keys), guessed ids, ids in other shapes, an ``account`` query
parameter, the listing's filters, his ledger entries' proofs and his client order ids.
Another account's object must be answered exactly like a missing one (``404 NOT_FOUND``),
with the owner named only in the ledger, and nothing of bob's may change.
"""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from tests.security.conftest import (
    ORDER,
    Target,
    assert_refused,
    entries_since,
    refusal_shape,
    snapshot,
    unchanged,
)

pytestmark = pytest.mark.e2e
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def guessed_id() -> str:
    """A well-formed order id nobody was given."""
    return "ord_" + "".join(secrets.choice(_BASE62) for _ in range(24))


def test_bobs_orders_by_their_real_ids_are_404_for_alice(target: Target) -> None:
    missing = target.call("alice", "GET", f"/v1/orders/{guessed_id()}")
    with unchanged(target):
        for who in ("alice", "alice_hmac", "alice_read"):
            for name in ("bob_open", "bob_filled"):
                response = target.call(who, "GET", f"/v1/orders/{target.order_ids[name]}")
                entry = assert_refused(response, 404, "NOT_FOUND", "authz", reason="belongs to account bob")
                assert entry["account"] == "alice" and entry["route"] == "get_order"
                assert refusal_shape(response) == refusal_shape(missing)  # no existence oracle
                assert b"bob" not in response.raw


def test_alice_cannot_cancel_bobs_order(target: Target) -> None:
    with unchanged(target):
        for who in ("alice", "alice_hmac", "alice_cancel"):
            for name in ("bob_open", "bob_filled"):
                response = target.call(who, "DELETE", f"/v1/orders/{target.order_ids[name]}")
                entry = assert_refused(response, 404, "NOT_FOUND", "authz", reason="belongs to account bob")
                assert entry["route"] == "cancel_order"
    bob = target.call("bob", "GET", f"/v1/orders/{target.order_ids['bob_open']}")
    assert bob.body["status"] == "new"


def test_guessed_order_ids_are_404_like_foreign_ones(target: Target) -> None:
    foreign = target.call("alice", "GET", f"/v1/orders/{target.order_ids['bob_open']}")
    bob_id = target.order_ids["bob_open"]
    # a random id, a neighbour of bob's (one character off), and runs of one character
    guesses = [
        guessed_id(),
        bob_id[:-1] + ("A" if bob_id[-1] != "A" else "B"),
        "ord_" + "0" * 24,
        "ord_" + "z" * 24,
    ]
    with unchanged(target):
        for guess in guesses:
            for method in ("GET", "DELETE"):
                response = target.call("alice", method, f"/v1/orders/{guess}")
                assert_refused(response, 404, "NOT_FOUND", "authz", reason="no such order")
                assert refusal_shape(response) == refusal_shape(foreign)


# (path after /v1/orders/, the stage that refuses it): every one names no order of alice's.
_SHAPES = [
    ("{bob_upper}", "firewall"),  # ORD_... : the pattern is case-sensitive
    ("Ord_{bob_tail}", "firewall"),
    ("{bob}x", "firewall"),  # one character too long
    ("{bob_short}", "firewall"),
    ("12345", "firewall"),  # a numeric id
    ("0", "firewall"),
    ("-1", "firewall"),
    ("ord_" + "a" * 500, "firewall"),  # overlong
    ("{bob_encoded}", "firewall"),  # ord_ with a percent-encoded letter: not canonical
    ("{bob}%00", "firewall"),  # NUL
    ("{bob}%20", "firewall"),
    ("ord_%EF%BD%81" + "a" * 23, "firewall"),  # a fullwidth 'a' (unicode), UTF-8 percent-encoded
    ("..%2f..%2fv1%2forders%2f{bob}", "edge"),  # encoded traversal: decodes to more segments
    ("%2e%2e/{bob}", "edge"),
    ("../orders/{bob}", "edge"),  # plain traversal
    ("{bob}/fills", "edge"),
    ("*", "firewall"),
]


def test_order_ids_in_other_shapes_are_404(target: Target) -> None:
    bob = target.order_ids["bob_open"]
    values = {
        "bob": bob,
        "bob_upper": bob.upper(),
        "bob_tail": bob[4:],
        "bob_short": bob[:-1],
        "bob_encoded": f"{bob[:4]}%{ord(bob[4]):02X}{bob[5:]}",
    }
    with unchanged(target):
        for shape, stage in _SHAPES:
            path = "/v1/orders/" + shape.format(**values)
            for method in ("GET", "DELETE"):
                response = target.call("alice", method, path)
                assert_refused(response, 404, "NOT_FOUND", stage)
    assert target.call("bob", "GET", f"/v1/orders/{bob}").body["status"] == "new"


def test_an_account_query_parameter_is_refused_everywhere(target: Target) -> None:
    bob = target.order_ids["bob_open"]
    index = target.entry_index["bob_order"]
    cases = [
        ("GET", f"/v1/orders/{bob}", "account=bob", "query string on a route that takes none"),
        ("DELETE", f"/v1/orders/{bob}", "account=bob", "query string on a route that takes none"),
        ("GET", "/v1/account", "account=bob", "query string on a route that takes none"),
        ("GET", "/v1/orders", "status=all&account=bob", "unknown field `account`"),
        ("GET", "/v1/orders", "account_id=bob", "unknown field `account_id`"),
        ("GET", "/v1/orders", "owner=bob&limit=500", "unknown field `owner`"),
        ("GET", f"/v1/ledger/entries/{index}/proof", f"tree_size={index + 1}&account=bob", "unknown field"),
        ("GET", "/v1/markets", "account=bob", "query string on a route that takes none"),
    ]
    with unchanged(target):
        for method, path, query, reason in cases:
            response = target.call("alice", method, path, query=query)
            assert_refused(response, 400, "BAD_REQUEST", "firewall", reason=reason)


def test_list_filters_never_show_bobs_orders(target: Target) -> None:
    bobs = snapshot(target)["bob"]["orders"]
    bob_ids = {o["id"] for o in bobs}
    bob_client_ids = {o["client_order_id"] for o in bobs}
    assert target.order_ids["bob_open"] in bob_ids
    with unchanged(target) as watch:
        for query in (
            "status=all&limit=500",
            "status=open&symbol=GOOG&limit=500",
            "status=closed&symbol=GOOG&limit=500",
            "symbol=GOOG",
            "limit=1",
        ):
            listed = watch.allow(target.call("alice", "GET", "/v1/orders", query=query))
            assert listed.status == 200
            ids = {o["id"] for o in listed.body["orders"]}
            assert not ids & bob_ids
            assert not {o["client_order_id"] for o in listed.body["orders"]} & bob_client_ids
        everything = watch.allow(target.call("alice", "GET", "/v1/orders", query="status=all&limit=500"))
        assert target.order_ids["alice_open"] in {o["id"] for o in everything.body["orders"]}
        account = watch.allow(target.call("alice", "GET", "/v1/account"))
        assert account.body["account"] == "alice"


def test_bobs_ledger_entries_are_404_and_alices_own_are_served(target: Target) -> None:
    entries = entries_since(target, 0)
    size = len(entries)
    bobs = [
        n
        for n, e in enumerate(entries)
        if e["data"].get("account") == "bob"
        and e["kind"] in ("request", "order.submit", "order.accepted", "key.created", "account.created")
    ]
    ownerless = [n for n, e in enumerate(entries) if e["kind"] in ("key.revoked", "policy.changed")]
    assert target.entry_index["bob_order"] in bobs and ownerless
    with unchanged(target) as watch:
        for index in [*bobs[:8], *ownerless[:2]]:
            response = target.call(
                "alice", "GET", f"/v1/ledger/entries/{index}/proof", query=f"tree_size={size}"
            )
            assert_refused(response, 404, "NOT_FOUND", "forward", reason="is not account alice's")
        beyond = target.call(
            "alice", "GET", f"/v1/ledger/entries/{size + 10}/proof", query=f"tree_size={size}"
        )
        assert refusal_shape(beyond) == refusal_shape(response)  # foreign like missing
        assert_refused(beyond, 404, "NOT_FOUND", "forward", reason="no entry")
        for shape in ("01", "-1", "1e3", str(10**19), "0x10", f"{bobs[0]}.0"):
            response = target.call(
                "alice", "GET", f"/v1/ledger/entries/{shape}/proof", query=f"tree_size={size}"
            )
            assert_refused(response, 404, "NOT_FOUND", "firewall", reason="path parameter index malformed")
        own = target.entry_index["alice_order"]
        proof = watch.allow(
            target.call("alice", "GET", f"/v1/ledger/entries/{own}/proof", query=f"tree_size={size}")
        )
        assert proof.status == 200
        assert json.loads(base64.b64decode(proof.body["entry"]))["data"]["account"] == "alice"


def test_bobs_client_order_id_is_no_oracle_and_not_his_order(target: Target) -> None:
    """Idempotency is per account: alice reusing bob's client_order_id with other
    parameters is not bob's 409 (which would tell her the id exists) and never bob's order."""
    before = snapshot(target)["bob"]
    body = dict(ORDER, client_order_id="bob_open-1", price="2.00")
    placed = target.call("alice", "POST", "/v1/orders", body)
    try:
        assert placed.status == 201, placed.body
        assert placed.body["id"] != target.order_ids["bob_open"] and placed.body["price"] == "2"
    finally:
        if placed.status in (200, 201):
            assert target.call("alice", "DELETE", f"/v1/orders/{placed.body['id']}").status == 200
    assert snapshot(target)["bob"] == before
