"""API10:2023 unsafe consumption of APIs: the venue is a party Bastion trades through, not one
it believes.

A real ``bastion serve`` trades through its Binance adapter with a local venue that speaks the
protocol over TLS (``tests/venues/binance/fake_venue.py``), and the venue is made to answer
badly: malformed, oversized, compressed, slow, redirected, inconsistent or hostile.  Each
attack asserts that Bastion

- stays up (``/healthz``) and answers the order with the documented refusal: ``503
  VENUE_UNAVAILABLE`` (the venue's answer cannot be trusted: it may hold the order), or ``422
  ORDER_REJECTED`` for a venue refusal, never a 5xx of its own, never the venue's text;
- records it: the request's ledger entry is a ``deny`` of the forward stage with Bastion's
  reason, and the order stays ``pending`` (not confirmed, no fill believed), with its
  ``order.submit`` entry;
- then, once the venue behaves, a retry with the same client order id returns the one order
  the venue holds: it never trades twice.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bastion.clock import SystemClock
from bastion.schema import OrderView
from bastion.tls import create_self_signed
from tests.e2e.conftest import Gateway, Key, Response, _configure, cli, cli_json, free_port, serve, stop
from tests.security.conftest import assert_refused, entries_since, ledger_size
from tests.venues.binance.fake_venue import FakeBinance

pytestmark = pytest.mark.e2e
COOLDOWN = 2.0


@dataclass
class Rig:
    gateway: Gateway
    venue: FakeBinance
    secrets: dict[str, bytes]


def _venue_section(fake: FakeBinance) -> str:
    return (
        "[venue]\n"
        'kind = "binance"\n'
        f'base_url = "{fake.url}"\n'
        f'ca_file = "{fake.cert}"\n'
        'symbols = ["BTCUSDT"]\n'
        "allow_private_network = true\n"
        'allowed_networks = ["127.0.0.1/32"]\n'
        "timeout_seconds = 1.0\n"
        "max_response_bytes = 262144\n"
        "breaker_failures = 4\n"
        f"breaker_cooldown_seconds = {COOLDOWN}\n"
    )


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    directory = tmp_path_factory.mktemp("venue-tls")
    create_self_signed(directory / "cert.pem", directory / "key.pem", SystemClock().now())
    api_key, api_secret = f"vk-{secrets.token_hex(12)}", f"vs-{secrets.token_hex(24)}"
    fake = FakeBinance(directory / "cert.pem", directory / "key.pem", api_key, api_secret)
    fake.start()
    home = tmp_path_factory.mktemp("api10-home")
    cli(home, "init")
    port = free_port()
    _configure(home, port)
    config = home / "bastion.toml"
    text = config.read_text()
    text = text[: text.index("[venue]")] + _venue_section(fake)
    config.write_text(text)
    cli(home, "accounts", "create", "alice")
    credential = home / "venue-credential.json"
    credential.write_text(json.dumps({"api_key": api_key, "api_secret": api_secret}))
    added = cli_json(
        home,
        "venues",
        "add",
        "--account",
        "alice",
        "--venue",
        "binance",
        "--credentials-file",
        str(credential),
    )
    assert added["permissions"]["can_trade"] and not added["permissions"]["can_withdraw"]
    credential.unlink()
    assert fake.count("restrictions") == 1 and fake.bad_signatures == 0  # audited with the venue, signed
    data = cli_json(
        home, "keys", "create", "--account", "alice", "--scopes", "read,trade,cancel", "--generate"
    )
    gateway = serve(home, port, {"alice": Key(data["key_id"], Path(data["private_key_path"]))})
    try:
        yield Rig(gateway, fake, {"venue api key": api_key.encode(), "venue api secret": api_secret.encode()})
    finally:
        stop(gateway)
        fake.stop()


def _body(client_order_id: str, **changes: str | None) -> dict[str, str]:
    body = {
        "client_order_id": client_order_id,
        "symbol": "BTC-USDT",
        "side": "buy",
        "type": "limit",
        "quantity": "0.001",
        "price": "49990.00",
        "time_in_force": "gtc",
    }
    for name, value in changes.items():
        if value is None:
            body.pop(name)
        else:
            body[name] = value
    return body


def _orders(rig: Rig, client_order_id: str) -> list[dict[str, Any]]:
    listed = rig.gateway.call("alice", "GET", "/v1/orders", query="status=all&limit=500")
    assert listed.status == 200, listed.body
    return [o for o in listed.body["orders"] if o["client_order_id"] == client_order_id]


def _held_by_venue(rig: Rig, client_order_id: str) -> int:
    return sum(o.client_order_id == client_order_id for o in rig.venue.orders.values())


def _no_secret(rig: Rig, *responses: Response, since: int) -> None:
    entries = json.dumps(entries_since(rig.gateway, since)).encode()
    for response in responses:
        blob = response.raw + json.dumps(response.headers).encode()
        for name, value in rig.secrets.items():
            assert value not in blob, f"{name} in an answer"
            assert value not in entries, f"{name} in the ledger"
    assert b"<script>" not in entries and b"Maintenance" not in entries  # venue text does not travel


def _healthy(rig: Rig) -> None:
    assert rig.gateway.raw("GET", "/healthz").status == 200


def _recovers(rig: Rig, body: dict[str, str]) -> dict[str, Any]:
    """The venue behaves again: a retry of the same order returns it, placed once."""
    rig.venue.hostile.clear()
    retried = rig.gateway.call("alice", "POST", "/v1/orders", body)
    assert retried.status in (200, 201), retried.body
    assert retried.body["client_order_id"] == body["client_order_id"]
    assert retried.body["status"] in ("new", "filled")
    assert _held_by_venue(rig, body["client_order_id"]) == 1  # whether the first attempt reached it or not
    canceled = rig.gateway.call("alice", "DELETE", f"/v1/orders/{retried.body['id']}")
    assert canceled.status == 200 or retried.body["status"] == "filled", canceled.body
    return retried.body


# The venue takes the order, then its answer goes wrong: Bastion cannot know what happened.
TAKEN_THEN_BROKEN = [
    ("malformed", "VENUE_ANSWER_MALFORMED"),  # truncated JSON
    ("not_json", "VENUE_ANSWER_NOT_JSON"),  # an HTML page with 200
    ("oversized", "VENUE_ANSWER_TOO_LARGE"),  # 4 MiB against a 256 KiB limit
    ("gzip_bomb", "VENUE_ANSWER_ENCODED"),  # never asked for, never inflated
    ("slow", "VENUE_TIMEOUT"),  # 30 s against a 1 s limit
    ("server_error", "VENUE_SERVER_ERROR"),  # a 503 that echoes the API key
    ("mismatch", "VENUE_ANSWER_MISMATCH"),  # an answer about someone else's order
    ("overfill", "VENUE_OVERFILLED"),  # executed 1000x the quantity
    ("worse_fill", "VENUE_FILL_OUTSIDE_LIMIT"),  # a limit buy filled at twice its limit
    ("huge_number", "VENUE_ANSWER_MALFORMED"),  # 400 digits, and 1e999
]


@pytest.mark.parametrize(("mode", "reason"), TAKEN_THEN_BROKEN, ids=[m for m, _ in TAKEN_THEN_BROKEN])
def test_a_broken_answer_to_an_order_fails_closed_is_recorded_and_a_retry_never_trades_twice(
    rig: Rig, mode: str, reason: str
) -> None:
    since = ledger_size(rig.gateway)
    cid = f"api10-{mode}-{secrets.token_hex(4)}"
    body = _body(cid)
    rig.venue.hostile["place"] = mode
    started = time.monotonic()
    response = rig.gateway.call("alice", "POST", "/v1/orders", body)
    assert time.monotonic() - started < 8  # bounded by the venue timeout, not the venue
    entry = assert_refused(response, 503, "VENUE_UNAVAILABLE", "forward", reason=reason, target=rig.gateway)
    assert entry["outcome"]["order_id"] == _orders(rig, cid)[0]["id"]
    (order,) = _orders(rig, cid)
    assert order["status"] == "pending" and order["filled_quantity"] == "0" and order["fills"] == []
    submitted = [e for e in entries_since(rig.gateway, since) if e["kind"] == "order.submit"]
    assert [e["data"]["client_order_id"] for e in submitted] == [cid]
    _no_secret(rig, response, since=since)
    _healthy(rig)
    _recovers(rig, body)


def test_a_redirect_is_refused_not_followed(rig: Rig) -> None:
    since = ledger_size(rig.gateway)
    cid = f"api10-redirect-{secrets.token_hex(4)}"
    rig.venue.hostile["place"] = "redirect"  # to http://169.254.169.254/ (cloud metadata)
    response = rig.gateway.call("alice", "POST", "/v1/orders", _body(cid))
    assert_refused(
        response, 503, "VENUE_UNAVAILABLE", "forward", reason="VENUE_REDIRECTED", target=rig.gateway
    )
    assert _orders(rig, cid)[0]["status"] == "pending" and _held_by_venue(rig, cid) == 0
    _no_secret(rig, response, since=since)
    _recovers(rig, _body(cid))


def test_a_venue_refusal_that_echoes_the_secret_and_markup_is_passed_on_as_a_code_only(rig: Rig) -> None:
    since = ledger_size(rig.gateway)
    cid = f"api10-echo-{secrets.token_hex(4)}"
    rig.venue.hostile["place"] = "echo_secret"
    response = rig.gateway.call("alice", "POST", "/v1/orders", _body(cid))
    rig.venue.hostile.clear()
    entry = assert_refused(response, 422, "ORDER_REJECTED", "forward", target=rig.gateway)
    assert response.body["error"]["reason"] == "VENUE_REJECTED"
    assert "VENUE_REJECTED" in entry["reason"]
    assert _orders(rig, cid)[0]["status"] == "rejected" and _held_by_venue(rig, cid) == 0
    _no_secret(rig, response, since=since)


def test_deeply_nested_answers_to_a_look_up_are_refused_and_the_stored_order_kept(rig: Rig) -> None:
    cid = f"api10-nest-{secrets.token_hex(4)}"
    placed = rig.gateway.call("alice", "POST", "/v1/orders", _body(cid))
    assert placed.status == 201 and placed.body["status"] == "new", placed.body
    rig.venue.hostile["order"] = "deep_nesting"
    looked = rig.gateway.call("alice", "GET", f"/v1/orders/{placed.body['id']}")
    rig.venue.hostile.clear()
    assert_refused(
        looked, 503, "VENUE_UNAVAILABLE", "forward", reason="VENUE_ANSWER_MALFORMED", target=rig.gateway
    )
    again = rig.gateway.call("alice", "GET", f"/v1/orders/{placed.body['id']}")
    assert again.status == 200 and again.body["status"] == "new" and again.body["id"] == placed.body["id"]
    assert rig.gateway.call("alice", "DELETE", f"/v1/orders/{placed.body['id']}").status == 200


def test_a_crossed_book_is_no_reference_price_and_orders_are_refused_until_it_is_sane(rig: Rig) -> None:
    rig.venue.hostile["ticker"] = "crossed"
    try:
        deadline = time.monotonic() + 15  # the last good quote ages out (5 s)
        while time.monotonic() < deadline:
            ticker = rig.gateway.call("alice", "GET", "/v1/markets/BTC-USDT/ticker")
            if ticker.status != 200:
                break
            time.sleep(0.5)
        assert ticker.status != 200, ticker.body
        cid = f"api10-crossed-{secrets.token_hex(4)}"
        refused = rig.gateway.call(
            "alice", "POST", "/v1/orders", _body(cid, type="market", price=None, time_in_force="ioc")
        )
        assert refused.status == 422 and refused.body["error"]["code"] == "RISK_REJECTED", refused.body
        assert _held_by_venue(rig, cid) == 0
    finally:
        rig.venue.hostile.clear()
    deadline = time.monotonic() + 10
    while rig.gateway.call("alice", "GET", "/v1/markets/BTC-USDT/ticker").status != 200:
        assert time.monotonic() < deadline, "the quote never came back"
        time.sleep(0.3)


def test_a_failing_venue_opens_the_circuit_and_is_not_called_until_the_cooldown(rig: Rig) -> None:
    rig.venue.hostile["place"] = "server_error"
    for n in range(4):
        failed = rig.gateway.call("alice", "POST", "/v1/orders", _body(f"api10-cb{n}-{secrets.token_hex(4)}"))
        assert_refused(
            failed, 503, "VENUE_UNAVAILABLE", "forward", reason="VENUE_SERVER_ERROR", target=rig.gateway
        )
    calls = rig.venue.count("place")
    started = time.monotonic()
    cut = rig.gateway.call("alice", "POST", "/v1/orders", _body(f"api10-cb-open-{secrets.token_hex(4)}"))
    assert_refused(cut, 503, "VENUE_UNAVAILABLE", "forward", reason="CIRCUIT_OPEN", target=rig.gateway)
    assert rig.venue.count("place") == calls and time.monotonic() - started < 1  # not even tried
    rig.venue.hostile.clear()
    time.sleep(COOLDOWN + 0.2)
    cid = f"api10-cb-after-{secrets.token_hex(4)}"
    placed = rig.gateway.call("alice", "POST", "/v1/orders", _body(cid))
    assert placed.status == 201, placed.body  # the trial call closes it again
    assert rig.gateway.call("alice", "DELETE", f"/v1/orders/{placed.body['id']}").status == 200


def test_a_rate_limited_venue_is_given_its_retry_after(rig: Rig) -> None:
    cid = f"api10-429-{secrets.token_hex(4)}"
    rig.venue.hostile["place"] = "rate_limited"
    limited = rig.gateway.call("alice", "POST", "/v1/orders", _body(cid))
    assert_refused(
        limited, 503, "VENUE_UNAVAILABLE", "forward", reason="VENUE_RATE_LIMITED", target=rig.gateway
    )
    rig.venue.hostile.clear()
    calls = rig.venue.count("place")
    held = rig.gateway.call("alice", "POST", "/v1/orders", _body(cid))  # within Retry-After: 1
    assert_refused(held, 503, "VENUE_UNAVAILABLE", "forward", reason="CIRCUIT_OPEN", target=rig.gateway)
    assert rig.venue.count("place") == calls
    time.sleep(1.2)
    _recovers(rig, _body(cid))


def test_every_order_a_bot_sees_is_in_bastions_shape_never_the_venues(rig: Rig) -> None:
    """What the venue said never reaches a bot as is: every order field is Bastion's."""
    listed = rig.gateway.call("alice", "GET", "/v1/orders", query="status=all&limit=500")
    assert listed.status == 200 and listed.body["orders"], listed.body
    fields = set(OrderView.__struct_fields__)
    for order in listed.body["orders"]:
        assert set(order) <= fields, set(order) - fields
        assert order["symbol"] == "BTC-USDT" and re.fullmatch(r"ord_[0-9A-Za-z]{24}", order["id"])
        for name in ("quantity", "filled_quantity"):
            assert Decimal(order[name]) <= Decimal("0.001") and "E" not in order[name]
