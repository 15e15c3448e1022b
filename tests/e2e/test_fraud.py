"""Acceptance (issue 8): the fraud stage, alerts and /metrics through the real server.

A server of its own, with a local webhook receiver and a real SMTP server (aiosmtpd) on
127.0.0.1, allowed explicitly in ``alerts.allowed_private_networks``.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from bastion.alerts.sinks import SIGNATURE_HEADER, verify_webhook_signature
from tests.e2e.conftest import Gateway, Key, _configure, cli, cli_json, free_port, serve, stop
from tests.e2e.test_orders import cid, on_tick, plain

pytestmark = pytest.mark.e2e

HOME_ADDRESS = "127.0.0.1"
THIEF_ADDRESS = "127.0.9.66"  # another /24: a network the victim's key never used


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver: keeps every POST with the time it arrived."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[tuple[float, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/bastion"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        assert isinstance(self.server, Receiver)
        self.server.posts.append((time.time(), {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[float, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((time.time(), bytes(envelope.content)))
        return "250 OK"


def _wait(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


class Rig:
    def __init__(self, gateway: Gateway, receiver: Receiver, mailbox: Mailbox, secret: str) -> None:
        self.gateway = gateway
        self.receiver = receiver
        self.mailbox = mailbox
        self.secret = secret


def _key(home: Path, account: str) -> Key:
    data = cli_json(
        home, "keys", "create", "--account", account, "--scopes", "read,trade,cancel", "--generate"
    )
    return Key(data["key_id"], Path(data["private_key_path"]))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    home = tmp_path_factory.mktemp("fraud-home")
    cli(home, "init")
    port = free_port()
    _configure(home, port, quiet_fraud=False)
    config = home / "bastion.toml"
    text = config.read_text()
    text = text.replace("allowed_private_networks = []", 'allowed_private_networks = ["127.0.0.1/32"]')
    text = text.replace(
        'allowed_networks = ["127.0.0.0/8", "::1/128"]', 'allowed_networks = ["127.0.0.1/32"]'
    )
    config.write_text(text)
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    refused = cli(home, "alerts", "add", "--webhook", receiver.url, check=False)
    assert refused.returncode == 2 and "127.0.0.1" in refused.stderr  # SSRF: not without the flag
    added = cli_json(home, "alerts", "add", "--webhook", receiver.url, "--allow-private-network")
    cli(
        home,
        "alerts",
        "add",
        "--email",
        "ops@example.com",
        "--smtp",
        f"127.0.0.1:{smtp.port}",
        "--allow-private-network",
    )
    cli(home, "accounts", "create", "victim")
    cli(home, "accounts", "create", "fund-a", "--owner", "fund")
    cli(home, "accounts", "create", "fund-b", "--owner", "fund")
    cli(home, "accounts", "create", "outsider")
    keys = {
        "victim": _key(home, "victim"),
        "holder": _key(home, "victim"),
        "fund-a": _key(home, "fund-a"),
        "fund-b": _key(home, "fund-b"),
        "outsider": _key(home, "outsider"),
        "prober": _key(home, "outsider"),
    }
    gateway = serve(home, port, keys)
    try:
        yield Rig(gateway, receiver, mailbox, added["secret"])
    finally:
        stop(gateway)
        smtp.stop()
        receiver.shutdown()


def _market(gateway: Gateway, symbol: str) -> dict[str, Any]:
    markets = {m["symbol"]: m for m in gateway.call("outsider", "GET", "/v1/markets").body["markets"]}
    found: dict[str, Any] = markets[symbol]
    return found


def ticker(gateway: Gateway, symbol: str) -> dict[str, Decimal]:
    body = gateway.call("outsider", "GET", f"/v1/markets/{symbol}/ticker").body
    return {k: Decimal(body[k]) for k in ("bid", "ask", "last")}


def min_quantity(gateway: Gateway, symbol: str, price: Decimal) -> str:
    m = _market(gateway, symbol)
    lot, floor = Decimal(m["lot_size"]), Decimal(m["min_notional"])
    return plain(max(((2 * floor / price) / lot).to_integral_value("ROUND_UP") * lot, lot))


def entry_of(gateway: Gateway, request_id: str) -> tuple[int, dict[str, Any]]:
    """(ledger index, data) of a request's entry."""
    for index, entry in reversed(list(enumerate(gateway.ledger_entries()))):
        if entry["kind"] == "request" and entry["data"].get("request_id") == request_id:
            return index, entry["data"]
    raise AssertionError(f"no ledger entry for {request_id}")


def _order(gateway: Gateway, symbol: str, side: str, price: str | None, **extra: Any) -> dict[str, Any]:
    reference = Decimal(price) if price is not None else Decimal(ticker(gateway, symbol)["last"])
    body: dict[str, Any] = {
        "client_order_id": cid("fr"),
        "symbol": symbol,
        "side": side,
        "type": "limit" if price is not None else "market",
        "quantity": min_quantity(gateway, symbol, reference),
    }
    if price is not None:
        body |= {"price": price, "time_in_force": "gtc"}
    return body | extra


def _tick(gateway: Gateway, symbol: str) -> str:
    return str(_market(gateway, symbol)["tick_size"])


def test_alerts_list_hides_targets_and_the_webhook_secret_is_in_no_log_or_database(rig: Rig) -> None:
    sinks = cli_json(rig.gateway.home, "alerts", "list")["sinks"]
    assert {s["kind"] for s in sinks} == {"webhook", "email"}
    webhook = next(s for s in sinks if s["kind"] == "webhook")
    assert "/hooks/bastion" not in webhook["target"]  # the path (a token, often) is not shown
    home = rig.gateway.home
    assert rig.secret.encode() not in (home / "bastion.db").read_bytes()
    logs = [home / "logs" / "bastion.log", *home.glob("serve-*.out")]
    assert logs[0].exists()
    assert all(rig.secret not in path.read_text(errors="replace") for path in logs)


def test_stolen_key_from_a_new_network_buying_an_illiquid_coin_high_is_stopped_and_alerted(rig: Rig) -> None:
    gateway = rig.gateway
    # The bot's normal life: its own address, a liquid market.
    assert gateway.call("victim", "GET", "/v1/account", source=HOME_ADDRESS).status == 200
    normal = _order(gateway, "GOOG", "sell", None)
    assert gateway.call("victim", "POST", "/v1/orders", normal, source=HOME_ADDRESS).status == 201
    before = {o["id"] for o in gateway.call("victim", "GET", "/v1/orders", query="status=all").body["orders"]}
    posts_before, mails_before = len(rig.receiver.posts), len(rig.mailbox.messages)

    # The thief: the same key from another network, MEME-USD at 50 % above the reference.
    last = Decimal(ticker(gateway, "MEME-USD")["last"])
    price = on_tick(last * Decimal("1.5"), _tick(gateway, "MEME-USD"), up=True)
    pump = _order(gateway, "MEME-USD", "buy", price)
    sent_at = time.time()
    refused = gateway.call("victim", "POST", "/v1/orders", pump, source=THIEF_ADDRESS)
    assert refused.status == 403, refused.body
    assert refused.body["error"]["code"] == "SUSPICIOUS_ACTIVITY"
    assert "new_network" not in json.dumps(refused.body)  # the caller learns no rule

    # Nothing traded: no new order exists for the account.
    after = {o["id"] for o in gateway.call("victim", "GET", "/v1/orders", query="status=all").body["orders"]}
    assert after == before

    # The ledger has the decision with its score and rules.
    index, data = entry_of(gateway, refused.body["error"]["request_id"])
    assert data["verdict"] == "deny" and data["stage"] == "fraud"
    fraud = data["outcome"]["fraud"]
    rules = {r["rule"] for r in fraud["rules"]}
    assert {"new_network", "illiquid_symbol", "price_deviation"} <= rules
    assert fraud["action"] == "halt" and fraud["score"] >= 2.5

    # The webhook got a signed alert citing that entry, and the e-mail arrived.
    assert _wait(lambda: len(rig.receiver.posts) > posts_before)
    at, headers, body = rig.receiver.posts[posts_before]
    assert verify_webhook_signature(
        rig.secret.encode(), headers[SIGNATURE_HEADER.lower()], body, now=time.time()
    )
    alert = json.loads(body)
    assert set(alert) >= {"rule", "severity", "key_id", "account", "action", "reason", "time", "ledger_index"}
    assert alert["key_id"] == gateway.keys["victim"].key_id and alert["account"] == "victim"
    assert alert["action"] == "halt" and alert["severity"] == "critical"
    assert alert["ledger_index"] == index
    latency = at - sent_at
    print(f"alert latency (request sent -> webhook received): {latency * 1000:.0f} ms")
    assert latency < 5.0
    assert _wait(lambda: len(rig.mailbox.messages) > mails_before)
    mail = message_from_bytes(rig.mailbox.messages[mails_before][1], policy=policy.default)  # unfolded
    assert "victim" in str(mail["subject"]) and "\n" not in str(mail["subject"])
    assert json.loads(mail.get_body().get_content())["ledger_index"] == index  # type: ignore[union-attr]

    # Halting the key: even the bot's own address is refused now, and the kill switch says so.
    again = gateway.call(
        "victim", "POST", "/v1/orders", _order(gateway, "GOOG", "sell", None), source=HOME_ADDRESS
    )
    assert _wait(
        lambda: any(
            s["subject"] == gateway.keys["victim"].key_id and s["state"] == "halted"
            for s in cli_json(gateway.home, "killswitch", "status")["states"]
        )
    )
    assert again.status == 422 and again.body["error"]["reason"] == "TRADING_HALTED"


def test_a_far_priced_order_is_held_until_an_operator_confirms_it(rig: Rig) -> None:
    gateway = rig.gateway
    assert gateway.call("holder", "GET", "/v1/account", source=HOME_ADDRESS).status == 200
    last = Decimal(ticker(gateway, "GOOG")["last"])
    order = _order(gateway, "GOOG", "buy", on_tick(last * Decimal("1.3"), "0.01", up=True))
    held = gateway.call("holder", "POST", "/v1/orders", order, source=HOME_ADDRESS)
    assert held.status == 403 and held.body["error"]["code"] == "STEP_UP_REQUIRED", held.body
    hold_id = held.body["error"]["reason"]
    assert hold_id.startswith("hold_")
    pending = cli_json(gateway.home, "fraud", "holds")["holds"]
    assert [h["id"] for h in pending if h["id"] == hold_id] == [hold_id]
    assert "price_deviation" in next(h for h in pending if h["id"] == hold_id)["rules"]

    retry = gateway.call("holder", "POST", "/v1/orders", order, source=HOME_ADDRESS)
    assert retry.status == 403 and retry.body["error"]["reason"] == hold_id  # still held, same hold

    confirmed = cli_json(gateway.home, "fraud", "confirm", hold_id)
    assert confirmed["status"] == "confirmed" and confirmed["decided_by"]
    placed = gateway.call("holder", "POST", "/v1/orders", order, source=HOME_ADDRESS)
    assert placed.status == 201, placed.body
    assert placed.body["client_order_id"] == order["client_order_id"]
    kinds = [e["kind"] for e in gateway.ledger_entries()]
    assert "fraud.hold_confirmed" in kinds
    twice = cli(gateway.home, "fraud", "confirm", hold_id, check=False)
    assert twice.returncode == 2 and "already confirmed" in twice.stderr


def test_self_match_between_two_accounts_of_one_owner_is_refused(rig: Rig) -> None:
    gateway = rig.gateway
    ask = Decimal(ticker(gateway, "GOOG")["ask"])
    resting_price = on_tick(ask * Decimal("1.02"), "0.01", up=True)  # a sell above the market rests
    rest = _order(gateway, "GOOG", "sell", resting_price)
    assert gateway.call("fund-a", "POST", "/v1/orders", rest).status == 201
    # The owner's other account: a buy that would trade against it.
    cross = _order(gateway, "GOOG", "buy", resting_price)
    refused = gateway.call("fund-b", "POST", "/v1/orders", cross)
    assert refused.status == 422, refused.body
    assert refused.body["error"] == refused.body["error"] | {
        "code": "RISK_REJECTED",
        "reason": "SELF_MATCH_PREVENTED",
    }
    _, entry = entry_of(gateway, refused.body["error"]["request_id"])
    assert "self_match" in {r["rule"] for r in entry["outcome"]["fraud"]["rules"]}
    assert gateway.call("fund-b", "GET", "/v1/orders", query="status=all").body["orders"] == []
    # A buy below the resting sell does not cross; another owner's crossing buy is not a self-match.
    below = _order(gateway, "GOOG", "buy", on_tick(ask * Decimal("0.9"), "0.01", up=False))
    assert gateway.call("fund-b", "POST", "/v1/orders", below).status == 201
    other = _order(gateway, "GOOG", "buy", None)
    assert gateway.call("outsider", "POST", "/v1/orders", other).status == 201


def test_repeated_denials_of_one_key_alert_then_halt_it(rig: Rig) -> None:
    gateway = rig.gateway
    posts_before = len(rig.receiver.posts)
    for n in range(8):  # probe_denials
        missing = gateway.call("prober", "GET", f"/v1/orders/ord_{'0' * 23}{n}")
        assert missing.status == 404
    assert _wait(
        lambda: any(json.loads(b)["rule"] == "fraud.probing" for _, _, b in rig.receiver.posts[posts_before:])
    )
    # The alert cites the denial that crossed the threshold, and that entry holds the decision.
    alert = next(
        json.loads(b)
        for _, _, b in rig.receiver.posts[posts_before:]
        if json.loads(b)["rule"] == "fraud.probing"
    )
    assert (alert["action"], alert["key_id"]) == ("alert", gateway.keys["prober"].key_id)
    cited = gateway.ledger_entries()[alert["ledger_index"]]["data"]
    assert (cited["verdict"], cited["code"]) == ("deny", "NOT_FOUND")
    decision = cited["outcome"]["probing"]
    assert (decision["action"], decision["denials"]) == ("alert", 8)
    assert [r["rule"] for r in decision["rules"]] == ["probing"]
    refused = gateway.call("prober", "POST", "/v1/orders", _order(gateway, "GOOG", "sell", None))
    assert refused.status == 403 and refused.body["error"]["code"] == "SUSPICIOUS_ACTIVITY"
    # Going on to probe_halt_denials (20) halts the key, recorded in the denial's entry too.
    for n in range(8, 20):
        assert gateway.call("prober", "GET", f"/v1/orders/ord_{'0' * 22}{n:02d}").status == 404
    assert _wait(
        lambda: any(
            s["subject"] == gateway.keys["prober"].key_id and s["state"] == "halted"
            for s in cli_json(gateway.home, "killswitch", "status")["states"]
        )
    )
    halts = [
        e["data"]["outcome"]["probing"]
        for e in gateway.ledger_entries()
        if e["kind"] == "request"
        and e["data"].get("key_id") == gateway.keys["prober"].key_id
        and e["data"].get("outcome", {}).get("probing", {}).get("action") == "halt"
    ]
    assert halts and halts[0]["denials"] == 20


def test_revoking_a_key_and_the_kill_switch_alert_the_operators(rig: Rig) -> None:
    gateway = rig.gateway
    before = len(rig.receiver.posts)
    spare = _key(gateway.home, "outsider")
    cli(gateway.home, "keys", "revoke", spare.key_id)  # in the CLI process: sent before it returns
    posted = [json.loads(b) for _, _, b in rig.receiver.posts[before:]]
    revoked = [(a["key_id"], a["account"], a["action"]) for a in posted if a["rule"] == "key.revoked"]
    assert revoked == [(spare.key_id, "outsider", "revoke")]
    cli(gateway.home, "killswitch", "on", "--account", "outsider")  # through the running server
    assert _wait(
        lambda: any(json.loads(b)["rule"] == "killswitch.on" for _, _, b in rig.receiver.posts[before:])
    )
    switched = next(json.loads(b) for _, _, b in rig.receiver.posts[before:] if b"killswitch.on" in b)
    assert switched["account"] == "outsider" and switched["action"] == "halted"
    cli(gateway.home, "killswitch", "off", "--account", "outsider")


def test_metrics_are_prometheus_text_and_only_for_allowed_scrapers(rig: Rig) -> None:
    gateway = rig.gateway
    bid = Decimal(ticker(gateway, "GOOG")["bid"])
    resting = _order(gateway, "GOOG", "buy", on_tick(bid * Decimal("0.9"), "0.01", up=False))
    placed = gateway.call("outsider", "POST", "/v1/orders", resting)
    assert placed.status == 201 and placed.body["status"] == "new", placed.body
    assert gateway.call("outsider", "DELETE", f"/v1/orders/{placed.body['id']}").status == 200
    response = gateway.raw("GET", "/metrics", source="127.0.0.1")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.raw.decode())}
    assert all(name.startswith("bastion_") for name in families)
    requests = families["bastion_requests"]
    samples = [s for s in requests.samples if s.name == "bastion_requests_total"]
    assert {"route", "verdict", "stage", "code"} <= set(samples[0].labels)
    fraud_denials = [
        s for s in samples if s.labels["stage"] == "fraud" and s.labels["code"] == "SUSPICIOUS_ACTIVITY"
    ]
    assert fraud_denials and fraud_denials[0].value >= 1
    held = [s for s in samples if s.labels["verdict"] == "hold"]
    assert held and held[0].value >= 1
    stages = {
        s.labels["stage"] for s in families["bastion_stage_duration_seconds"].samples if "stage" in s.labels
    }
    assert {"shield", "authn", "risk", "fraud", "forward"} <= stages
    rules = {
        s.labels["rule"]: s.value
        for s in families["bastion_fraud_rules"].samples
        if s.name.endswith("_total")
    }
    assert rules["self_match"] >= 1 and rules["new_network"] >= 1
    assert families["bastion_ledger_entries"].samples[0].value > 10
    restricted = {
        (s.labels["level"], s.labels["state"]): s.value
        for s in families["bastion_killswitch_restricted"].samples
    }
    assert restricted[("key", "halted")] >= 1  # the victim's key, halted by the fraud stage
    assert next(s.value for s in families["bastion_fills"].samples if s.name == "bastion_fills_total") >= 1
    delivered = [
        s
        for s in families["bastion_alerts"].samples
        if s.name == "bastion_alerts_total" and s.labels["outcome"] == "delivered"
    ]
    assert delivered and sum(s.value for s in delivered) >= 2  # webhook and e-mail
    by_rule = {s.labels["rule"] for s in delivered}
    # (key.revoked left from the CLI process, which has metrics of its own)
    assert {"fraud.price_deviation", "fraud.probing", "fraud.self_match", "killswitch.on"} <= by_rule, by_rule
    decisions = {
        s.labels["action"]: s.value
        for s in families["bastion_fraud_decisions"].samples
        if s.name == "bastion_fraud_decisions_total"
    }
    # the stolen key's halt, the prober's (in the log phase), the held order, many allows
    assert decisions["halt"] >= 2 and decisions["hold"] >= 1 and decisions["allow"] >= 5, decisions
    assert rules["probing"] >= 1 and rules["price_deviation"] >= 1
    orders = {
        s.labels["event"]: s.value for s in families["bastion_orders"].samples if s.name.endswith("_total")
    }
    assert orders["placed"] >= 5 and orders["filled"] >= 1 and orders["canceled"] >= 1, orders
    assert (
        next(s.value for s in families["bastion_cancels"].samples if s.name == "bastion_cancels_total") >= 1
    )
    latency = families["bastion_alert_latency_seconds"]
    assert any(s.name.endswith("_count") and s.value >= 1 for s in latency.samples)
    # Another address than the configured scrapers: as if the route did not exist.
    assert gateway.raw("GET", "/metrics", source="127.0.0.2").status == 404
