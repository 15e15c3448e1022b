"""Acceptance (issue 9): every runbook of docs/incident-response.md, its commands run in order
through the CLI against a real server, and the outcome each promises.

One server for the module, with a local webhook receiver as its alert sink (127.0.0.1 is
allowed explicitly in ``alerts.allowed_private_networks``), the fraud stage at its defaults
and the shield's ban threshold back at its default of 10.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from bastion.alerts.sinks import SIGNATURE_HEADER, verify_webhook_signature
from bastion.cli import app
from tests.e2e.conftest import Gateway, Key, Response, _configure, free_port, serve, stop
from tests.e2e.test_fraud import Receiver, _wait
from tests.e2e.test_orders import FAR_BELOW, cid, on_tick

pytestmark = pytest.mark.e2e

FLOOD_ADDRESS = "127.0.0.66"
BOT_ELSEWHERE = "127.0.0.2"


RUNNER = CliRunner()


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


def bastion(home: Path | None, *args: str, check: bool = True) -> Ran:
    """`bastion ARGS --home HOME`: the real CLI, run in this process like tests/test_cli.py does
    (an interpreter per command spends 1.7 s importing; the runbooks run about sixty commands).
    The server it talks to is a real `bastion serve` in a process of its own."""
    saved = structlog.get_config()  # the CLI points structlog at the home's log file
    try:
        result = RUNNER.invoke(app, [*args, *(["--home", str(home)] if home is not None else [])])
    finally:
        structlog.configure(**saved)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    ran = Ran(result.exit_code, result.stdout, result.stderr)
    if check and ran.code != 0:
        raise AssertionError(f"bastion {' '.join(args)} exited {ran.code}: {ran.stdout}{ran.stderr}")
    return ran


def bastion_json(home: Path | None, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bastion(home, *args, "--json").stdout)
    return data


@dataclass
class Rig:
    gateway: Gateway
    receiver: Receiver
    webhook_secret: str
    public_key: Path  # the ledger's public key, kept "off the host" before any incident

    @property
    def home(self) -> Path:
        return self.gateway.home

    def alerts_since(self, count: int) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.receiver.posts[count:]]

    def wait_alert(self, since: int, rule: str, **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for alert in self.alerts_since(since):
                if alert["rule"] == rule and all(alert.get(k) == v for k, v in fields.items()):
                    return alert
            return None

        assert _wait(lambda: found() is not None), (rule, fields, self.alerts_since(since))
        alert = found()
        assert alert is not None
        return alert


def _key(home: Path, account: str, *extra: str) -> Key:
    data = bastion_json(home, "keys", "create", "--account", account, "--scopes", "read,trade,cancel", *extra)
    path = data.get("private_key_path")
    return Key(data["key_id"], Path(path) if path else None, data.get("secret"))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    home = tmp_path_factory.mktemp("runbooks-home")
    bastion(home, "init")
    port = free_port()
    _configure(home, port, quiet_fraud=False)
    config = home / "bastion.toml"
    text = config.read_text()
    text = text.replace("allowed_private_networks = []", 'allowed_private_networks = ["127.0.0.1/32"]')
    # runbook 4 floods from one address: the ban threshold the shared suite raises goes back
    text = text.replace("ban_after_failures = 10000 ", "ban_after_failures = 10 ")
    config.write_text(text)
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    # Before an incident: a sink (tested), the ledger's public key kept elsewhere.
    sink = bastion_json(home, "alerts", "add", "--webhook", receiver.url, "--allow-private-network")
    offhost = tmp_path_factory.mktemp("off-host")
    public_key = offhost / "ledger.pub"
    public_key.write_text(bastion(home, "ledger", "public-key").stdout)
    bastion(home, "accounts", "create", "acme")
    bastion(home, "accounts", "create", "globex")
    keys = {
        "leaked": _key(home, "acme", "--generate", "--max-order-notional", "100000"),
        "ops": _key(home, "acme", "--generate"),
        "globex": _key(home, "globex", "--generate"),
        "globex-hmac": _key(home, "globex", "--alg", "hmac"),
    }
    gateway = serve(home, port, keys)
    try:
        yield Rig(gateway, receiver, sink["secret"], public_key)
    finally:
        stop(gateway)
        receiver.shutdown()


# -- helpers ---------------------------------------------------------------------------------


def ticker(gateway: Gateway, who: str, symbol: str = "GOOG") -> dict[str, Decimal]:
    body = gateway.call(who, "GET", f"/v1/markets/{symbol}/ticker").body
    return {k: Decimal(body[k]) for k in ("bid", "ask", "last")}


def resting_buy(gateway: Gateway, who: str) -> dict[str, Any]:
    """A GOOG buy far below the market: it rests (and is passive, so the fraud stage lets it be)."""
    price = on_tick(ticker(gateway, who)["bid"] * FAR_BELOW, "0.01", up=False)
    quantity = max(1, math.ceil(2 / Decimal(price)))  # GOOG: lot 1, minimum notional 1 USD
    body = {
        "client_order_id": cid("rb-rest"),
        "symbol": "GOOG",
        "side": "buy",
        "type": "limit",
        "quantity": str(quantity),
        "price": price,
        "time_in_force": "gtc",
    }
    placed = gateway.call(who, "POST", "/v1/orders", body)
    assert placed.status == 201 and placed.body["status"] == "new", placed.body
    return dict(placed.body)


def market(gateway: Gateway, who: str, side: str, quantity: str, source: str | None = None) -> Response:
    body = {"client_order_id": cid("rb-mkt"), "symbol": "GOOG", "side": side, "type": "market"}
    return gateway.call(who, "POST", "/v1/orders", body | {"quantity": quantity}, source=source)


def refused_for(response: Response, code: str, reason: str | None = None) -> None:
    assert response.status in (401, 422, 429), response.body
    assert response.body["error"]["code"] == code, response.body
    if reason is not None:
        assert response.body["error"]["reason"] == reason, response.body


def evidence_bundle(rig: Rig, folder: Path) -> list[dict[str, Any]]:
    """The evidence bundle: export, public key (the same as the off-host copy), offline check.
    Returns the export's entries, decoded (what `jq '.body | @base64d | fromjson'` prints)."""
    folder.mkdir(parents=True, exist_ok=True)
    exported = bastion_json(rig.home, "ledger", "export", "--out", str(folder / "ledger.jsonl"))
    (folder / "ledger.pub").write_text(bastion(rig.home, "ledger", "public-key").stdout)
    assert (folder / "ledger.pub").read_bytes() == rig.public_key.read_bytes()
    offline = bastion_json(
        folder,  # any directory: nothing of the home is needed
        "ledger",
        "verify",
        "--export",
        str(folder / "ledger.jsonl"),
        "--public-key",
        str(folder / "ledger.pub"),
    )
    assert offline["ok"] is True and offline["entries"] == exported["entries"]
    return decoded(folder / "ledger.jsonl")


def decoded(export: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in export.read_text().splitlines()[1:]]
    return [json.loads(base64.b64decode(item["body"])) for item in lines if "body" in item]


def about_key(entries: list[dict[str, Any]], key_id: str) -> list[dict[str, Any]]:
    """The runbook's jq filter: entries naming the key (as key_id, claimed_key_id or subject)."""
    fields = ("key_id", "claimed_key_id", "subject")
    return [e for e in entries if key_id in {e["data"].get(f) for f in fields}]


def credential_file(folder: Path, name: str) -> tuple[Path, str, str]:
    """A trade-only, IP-restricted paper credential (the shape of tests/test_cli.py's)."""
    api_key, api_secret = f"pk-{name}-{secrets.token_hex(12)}", f"ps-{secrets.token_hex(24)}"
    restrictions = {
        "ipRestrict": True,
        "enableReading": True,
        "enableSpotAndMarginTrading": True,
        "enableWithdrawals": False,
        "enableInternalTransfer": False,
        "permitsUniversalTransfer": False,
    }
    path = folder / f"{name}.json"
    path.write_text(
        json.dumps({"api_key": api_key, "api_secret": api_secret, "paper_api_restrictions": restrictions})
    )
    path.chmod(0o600)
    return path, api_key, api_secret


# -- 1. a leaked Bastion key -------------------------------------------------------------------


def test_runbook_1_a_leaked_bastion_key(rig: Rig, tmp_path: Path) -> None:
    gateway, home = rig.gateway, rig.home
    leaked = gateway.keys["leaked"].key_id
    order = resting_buy(gateway, "leaked")  # what the thief (or the bot) left resting
    since = len(rig.receiver.posts)

    # 1. Halt the key and cancel its open orders.
    halted = bastion_json(home, "killswitch", "on", "--key", leaked, "--cancel-open")
    assert halted["running_server"] is True
    assert (halted["previous"], halted["state"]) == ("active", "halted")
    assert halted["canceled"] == [order["id"]] and halted["not_canceled"] == []
    refused_for(market(gateway, "leaked", "buy", "1"), "RISK_REJECTED", "TRADING_HALTED")

    # 2. Revoke the key: from now on every request it signs is a 401.
    assert bastion_json(home, "keys", "revoke", leaked) == {"key_id": leaked, "revoked": True}
    denied = gateway.call("leaked", "GET", "/v1/account")
    refused_for(denied, "AUTHENTICATION_FAILED")
    assert gateway.entry_for(denied.body["error"]["request_id"])["reason"] == "revoked key"
    refused_for(market(gateway, "leaked", "buy", "1"), "AUTHENTICATION_FAILED")
    # Its order was canceled at the venue: the account's other key sees it so.
    seen = gateway.call("ops", "GET", f"/v1/orders/{order['id']}")
    assert seen.status == 200 and seen.body["status"] == "canceled", seen.body

    # 3. The account's keys: the leaked one revoked, the other still active.
    listed = bastion_json(home, "keys", "list", "--account", "acme")["keys"]
    states = {k["key_id"]: k["state"] for k in listed}
    assert states == {leaked: "revoked", gateway.keys["ops"].key_id: "active"}

    # 4. Preserve the evidence: the ledger verifies, the bundle verifies offline.
    assert bastion_json(home, "ledger", "verify")["ok"] is True
    entries = evidence_bundle(rig, tmp_path / "incident")
    kinds = {e["kind"] for e in entries}
    assert {"key.revoked", "killswitch.changed", "order.canceled"} <= kinds
    mine = about_key(entries, leaked)
    assert {"key.created", "order.submit", "request", "killswitch.changed", "key.revoked"} <= {
        e["kind"] for e in mine
    }
    switch = next(e["data"] for e in mine if e["kind"] == "killswitch.changed")
    assert switch["state"] == "halted" and switch["cancel_open"] is True and "(cli, pid" in switch["actor"]
    assert any(e["kind"] == "order.submit" and e["data"]["order_id"] == order["id"] for e in mine)
    canceled = [e["data"] for e in entries if e["kind"] == "order.canceled"]
    expected = {"order_id": order["id"], "status": "canceled", "by": "killswitch key"}
    assert expected.items() <= canceled[-1].items()
    after = [e["data"] for e in mine if e["kind"] == "request" and e["data"].get("claimed_key_id") == leaked]
    assert after and after[-1]["reason"] == "revoked key"

    # The operators were alerted (the on-duty operator then calls the owner).
    switched = rig.wait_alert(since, "killswitch.on", key_id=leaked)
    assert switched["action"] == "halted" and leaked in switched["reason"]
    revoked = rig.wait_alert(since, "key.revoked", key_id=leaked)
    assert (revoked["account"], revoked["action"]) == ("acme", "revoke")
    _, headers, body = next(p for p in rig.receiver.posts[since:] if b'"key.revoked"' in p[2])
    assert verify_webhook_signature(
        rig.webhook_secret.encode(), headers[SIGNATURE_HEADER.lower()], body, now=time.time()
    )

    # 5. Find the leak: the bot's repository holds the key id and its private key.
    bot = tmp_path / "the-bot"
    (bot / "config").mkdir(parents=True)
    (bot / "settings.py").write_text(f'BASTION_KEY_ID = "{leaked}"\n')
    private_key_path = gateway.keys["leaked"].private_key_path
    assert private_key_path is not None
    shutil.copy(private_key_path, bot / "config" / "bastion.pem")
    scanned = bastion(None, "scan", str(bot), "--json", check=False)  # reads only the bot's files
    assert scanned.code == 1
    found = {(f["path"], f["type"]) for f in json.loads(scanned.stdout)["findings"]}
    assert ("settings.py", "Bastion key id") in found
    assert any(path == "config/bastion.pem" for path, _ in found), found
    assert leaked not in scanned.stdout  # findings never print the value

    # 6. A replacement key, generated on the bot's host, bound to its address, same limits.
    private = Ed25519PrivateKey.generate()
    (tmp_path / "bot.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "bot.pub").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    new = bastion_json(
        home,
        "keys",
        "create",
        "--account",
        "acme",
        "--scopes",
        "read,trade,cancel",
        "--public-key",
        str(tmp_path / "bot.pub"),
        "--allow-ip",
        "127.0.0.1/32",
    )
    assert "private_key_path" not in new  # Bastion never saw the private key
    document = bastion_json(home, "policy", "show", leaked)["document"]
    assert document == {"max_order_notional": "100000"}
    (tmp_path / "key-policy.json").write_text(json.dumps(document))
    applied = bastion_json(home, "policy", "set", new["key_id"], "--file", str(tmp_path / "key-policy.json"))
    assert applied["document"] == document and applied["running_server_updated"] is True
    gateway.keys["replacement"] = Key(new["key_id"], tmp_path / "bot.pem")
    placed = market(gateway, "replacement", "buy", "1")
    assert placed.status == 201 and placed.body["status"] == "filled", placed.body
    assert market(gateway, "replacement", "sell", "1", source=BOT_ELSEWHERE).status == 401  # allow-list


# -- 2. a leaked venue credential --------------------------------------------------------------


def test_runbook_2_a_leaked_venue_credential(rig: Rig, tmp_path: Path) -> None:
    gateway, home = rig.gateway, rig.home
    old_file, old_key, old_secret = credential_file(tmp_path, "old")
    old_id = bastion_json(home, "venues", "add", "--account", "globex", "--credentials-file", str(old_file))[
        "credential_id"
    ]
    old_file.unlink()
    order = resting_buy(gateway, "globex")
    since = len(rig.receiver.posts)

    # 1. Halt the account (every key of it) and cancel its open orders.
    halted = bastion_json(home, "killswitch", "on", "--account", "globex", "--cancel-open")
    assert (halted["state"], halted["canceled"], halted["not_canceled"]) == ("halted", [order["id"]], [])
    refused_for(market(gateway, "globex", "buy", "1"), "RISK_REJECTED", "TRADING_HALTED")
    refused_for(market(gateway, "globex-hmac", "buy", "1"), "RISK_REJECTED", "TRADING_HALTED")
    assert gateway.call("globex", "GET", f"/v1/orders/{order['id']}").body["status"] == "canceled"

    # 2. (The owner revokes the old key at the venue and creates a trade-only one.)
    # 3. Store the new credential from a file, then shred the file.
    new_file, new_key, new_secret = credential_file(tmp_path, "new")
    added = bastion_json(home, "venues", "add", "--account", "globex", "--credentials-file", str(new_file))
    assert added["warnings"] == []
    assert added["permissions"]["can_withdraw"] is False and added["permissions"]["can_transfer"] is False
    subprocess.run(["shred", "-u", str(new_file)], check=True, timeout=30)
    assert not new_file.exists()

    # 4. Find the old credential by its fingerprint, and remove it.
    listed = bastion_json(home, "venues", "list")["credentials"]
    fingerprint = hashlib.sha256(old_key.encode()).hexdigest()[:16]  # printf %s KEY | sha256sum | cut -c1-16
    assert [c["credential_id"] for c in listed if c["api_key_fingerprint"] == fingerprint] == [old_id]
    removed = bastion_json(home, "venues", "remove", old_id)
    assert removed == {"credential_id": old_id, "account": "globex", "removed": True}

    # 5. Only the new credential is left for the account.
    left = [c for c in bastion_json(home, "venues", "list")["credentials"] if c["account"] == "globex"]
    assert [c["credential_id"] for c in left] == [added["credential_id"]]
    assert left[0]["api_key_fingerprint"] == hashlib.sha256(new_key.encode()).hexdigest()[:16]

    # 6. Resume trading: the bot's next order goes through.
    resumed = bastion_json(home, "killswitch", "off", "--account", "globex")
    assert (resumed["previous"], resumed["state"]) == ("halted", "active")
    traded = market(gateway, "globex", "buy", "1")
    assert traded.status == 201 and traded.body["status"] == "filled", traded.body

    # 7. The evidence: both credentials' lives by fingerprint, never a secret.
    entries = evidence_bundle(rig, tmp_path / "incident")
    credential_entries = [e for e in entries if e["kind"].startswith("credential.")]
    assert [(e["kind"], e["data"]["api_key_fingerprint"]) for e in credential_entries] == [
        ("credential.added", fingerprint),
        ("credential.added", left[0]["api_key_fingerprint"]),
        ("credential.removed", fingerprint),
    ]
    assert "(cli, pid" in credential_entries[-1]["data"]["actor"]
    export = (tmp_path / "incident" / "ledger.jsonl").read_bytes()
    stored = b"".join(p.read_bytes() for p in home.glob("bastion.db*"))
    logs = b"".join(p.read_bytes() for p in [*home.glob("serve-*.out"), *(home / "logs").glob("*")])
    for secret in (old_secret, new_secret, old_key, new_key):
        for where in (stored, export, logs):
            assert secret.encode() not in where

    # The operators were alerted of the halt and of the removal.
    switched = rig.wait_alert(since, "killswitch.on", account="globex")
    assert switched["action"] == "halted"
    gone = rig.wait_alert(since, "credential.removed", account="globex")
    assert old_id in gone["reason"] and gone["action"] == "revoke"


# -- 3. a suspected insider --------------------------------------------------------------------


def test_runbook_3_a_suspected_insider(rig: Rig, tmp_path: Path) -> None:
    gateway, home = rig.gateway, rig.home
    # What the insider did: raise the account's limits.
    (tmp_path / "loose.yaml").write_text('max_order_notional: "1000000000"\n')
    changed = bastion_json(home, "policy", "set", "globex", "--file", str(tmp_path / "loose.yaml"))
    assert changed["version"] == 1

    # 1. Export the ledger and its public key to a directory of their own.
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    exported = bastion_json(home, "ledger", "export", "--out", str(evidence / "ledger.jsonl"))
    (evidence / "ledger.pub").write_text(bastion(home, "ledger", "public-key").stdout)
    assert (evidence / "ledger.pub").read_bytes() == rig.public_key.read_bytes()  # cmp: the same key

    # 2. Verify the export offline (from a directory with nothing of the home), then the database.
    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()
    offline = bastion_json(
        elsewhere,
        "ledger",
        "verify",
        "--export",
        str(evidence / "ledger.jsonl"),
        "--public-key",
        str(evidence / "ledger.pub"),
    )
    assert offline["ok"] is True and offline["entries"] == exported["entries"]
    assert offline["unsigned_tail"] == 0  # the export ends with a head over every entry
    assert bastion_json(home, "ledger", "verify")["ok"] is True

    # 3. Who changed what: the policy's versions name their actor, as the ledger does.
    shown = bastion_json(home, "policy", "show", "globex")
    assert [h["version"] for h in shown["history"]] == [1]
    assert all("(cli, pid" in h["actor"] for h in shown["history"])
    assert shown["document"] == {"max_order_notional": "1000000000"}
    entries = decoded(evidence / "ledger.jsonl")
    policy_changes = [e["data"] for e in entries if e["kind"] == "policy.changed"]
    globex_changes = [d for d in policy_changes if d["subject"] == "account:globex"]
    assert [d["actor"] for d in globex_changes] == [h["actor"] for h in shown["history"]]
    # Every key, credential and sink listed is accounted for in the ledger.
    created = {e["data"]["key_id"] for e in entries if e["kind"] in ("key.created", "key.rotated")}
    created |= {e["data"]["successor"] for e in entries if e["kind"] == "key.rotated"}
    revoked = {e["data"]["key_id"] for e in entries if e["kind"] == "key.revoked"}
    for key in bastion_json(home, "keys", "list")["keys"]:
        assert key["key_id"] in created
        assert (key["state"] == "revoked") == (key["key_id"] in revoked)
    stored = {e["data"]["credential_id"] for e in entries if e["kind"] == "credential.added"}
    stored -= {e["data"]["credential_id"] for e in entries if e["kind"] == "credential.removed"}
    assert {c["credential_id"] for c in bastion_json(home, "venues", "list")["credentials"]} == stored
    added = {e["data"]["sink_id"]: e["data"]["actor"] for e in entries if e["kind"] == "alerts.sink_added"}
    sinks = bastion_json(home, "alerts", "list")["sinks"]
    assert {s["id"] for s in sinks} == set(added) and all("(cli, pid" in a for a in added.values())

    # 4. Contain: put the policy back.
    (tmp_path / "restore.yaml").write_text("max_order_notional: null\n")
    restored = bastion_json(home, "policy", "set", "globex", "--file", str(tmp_path / "restore.yaml"))
    assert restored["version"] == 2 and restored["document"] == {}

    # 5. Rotate the master key, retire the old one; then rotate the HMAC key it protected.
    hmac_before = gateway.call("globex-hmac", "GET", "/v1/account")
    assert hmac_before.status == 200
    rotated = bastion_json(home, "vault", "rotate-master")
    assert rotated["target_version"] == 2 and rotated["resealed"] >= 3, rotated  # sink, HMAC, ledger key
    assert rotated["skipped"] == 0
    retired = bastion_json(home, "vault", "retire", "--yes")
    assert retired == {"unused": [1], "retired": True}
    status = bastion_json(home, "vault", "status")
    assert status == {"versions": [2], "in_use": [2], "current": 2}
    assert not (home / "vault" / "master-1.key").exists()
    rehmac = bastion_json(home, "keys", "rotate", gateway.keys["globex-hmac"].key_id, "--overlap", "1h")
    gateway.keys["globex-hmac-2"] = Key(rehmac["key_id"], secret=rehmac["secret"])
    # the server keeps serving: the new secret (sealed under version 2) opens, the old one still works
    assert gateway.call("globex-hmac-2", "GET", "/v1/account").status == 200
    assert gateway.call("globex-hmac", "GET", "/v1/account").status == 200
    kinds = [e["kind"] for e in gateway.ledger_entries()]
    assert {"vault.master_created", "vault.rotated", "vault.retired", "key.rotated"} <= set(kinds)

    # 6. Alerts still arrive (the sink's sealed target opens under the new key); doctor is clean.
    since = len(rig.receiver.posts)
    tested = bastion_json(home, "alerts", "test")["results"]
    assert tested and all(r["ok"] for r in tested), tested
    assert _wait(lambda: len(rig.receiver.posts) > since)
    doctor = bastion(home, "doctor", "--json", check=False)
    checks = json.loads(doctor.stdout)["checks"]
    assert doctor.code == 0, [c for c in checks if c["level"] == "fail"]
    ledger = next(c for c in checks if c["name"] == "ledger")
    assert ledger["level"] == "ok"
    assert not any(c["name"] == "master keys" for c in checks)  # nothing left to retire


# -- 4. a flood --------------------------------------------------------------------------------


def _oversized_head(gateway: Gateway, source: str) -> bytes:
    raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=10, source_address=(source, 0))
    with gateway.context().wrap_socket(raw, server_hostname="localhost") as sock:
        many = "".join(f"x-h{n}: v\r\n" for n in range(80))
        sock.sendall(f"GET /v1/account HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
        return sock.recv(4096)


def test_runbook_4_a_flood(rig: Rig, tmp_path: Path) -> None:
    gateway, home = rig.gateway, rig.home
    bad = {
        "signature-input": f'sig1=("@method");created={int(time.time())};keyid="bst_x";nonce="n"',
        "signature": "sig1=:AA==:",
    }
    answers = []
    for _ in range(30):  # a burst of bad signatures from one address, until it is banned
        answers.append(gateway.raw("GET", "/v1/account", headers=bad, source=FLOOD_ADDRESS).status)
        if answers[-1] == 429:
            break
    assert answers == [401] * 10 + [429]
    banned = gateway.raw("GET", "/v1/account", headers=bad, source=FLOOD_ADDRESS)
    assert banned.status == 429 and banned.body["error"]["code"] == "BANNED" and banned.headers["retry-after"]
    assert gateway.call("ops", "GET", "/v1/account", source=FLOOD_ADDRESS).status == 429  # even signed right
    assert b"431" in _oversized_head(gateway, "127.0.0.67")  # and a connection-level one

    # 1. Which layer takes it: /metrics, from the host.
    scraped = gateway.raw("GET", "/metrics", source="127.0.0.1")
    assert scraped.status == 200
    families = {f.name: f for f in text_string_to_metric_families(scraped.raw.decode())}
    requests = [s for s in families["bastion_requests"].samples if s.name == "bastion_requests_total"]
    by_code: dict[str, float] = {}
    for sample in requests:
        by_code[sample.labels["code"]] = by_code.get(sample.labels["code"], 0) + sample.value
    assert by_code["BANNED"] >= 3 and by_code["AUTHENTICATION_FAILED"] >= 10
    assert all(s.labels["stage"] == "shield" for s in requests if s.labels["code"] == "BANNED")
    refused = {
        s.labels["reason"]: s.value
        for s in families["bastion_connections_refused"].samples
        if s.name == "bastion_connections_refused_total"
    }
    assert sum(refused.values()) >= 1, refused

    # 2. Who was banned: shield.banned in the ledger.
    (tmp_path / "incident").mkdir()
    bastion(home, "ledger", "export", "--out", str(tmp_path / "incident" / "ledger.jsonl"))
    bans = [
        e["data"] for e in decoded(tmp_path / "incident" / "ledger.jsonl") if e["kind"] == "shield.banned"
    ]
    assert [(b["kind"], b["subject"]) for b in bans] == [("address", FLOOD_ADDRESS)]
    assert bans[0]["seconds"] == 30.0

    # 3. The bots still trade, from any other address.
    assert gateway.raw("GET", "/healthz").status == 200
    bought = market(gateway, "ops", "buy", "1", source=BOT_ELSEWHERE)
    assert bought.status == 201 and bought.body["status"] == "filled", bought.body

    # 5. Optional: only position-reducing orders until it is over, then back.
    since = len(rig.receiver.posts)
    reducing = bastion_json(home, "killswitch", "on", "--global", "--reduce-only")
    assert (reducing["previous"], reducing["state"]) == ("active", "reducing")
    refused_for(market(gateway, "ops", "buy", "1", source=BOT_ELSEWHERE), "RISK_REJECTED", "REDUCE_ONLY")
    sold = market(gateway, "ops", "sell", "1", source=BOT_ELSEWHERE)
    assert sold.status == 201 and sold.body["status"] == "filled", sold.body
    alert = rig.wait_alert(since, "killswitch.on", action="reducing")
    assert alert["key_id"] is None and alert["account"] is None
    back = bastion_json(home, "killswitch", "off", "--global")
    assert (back["previous"], back["state"]) == ("reducing", "active")
    assert market(gateway, "ops", "buy", "1", source=BOT_ELSEWHERE).status == 201


# -- 5. a ledger verification failure ----------------------------------------------------------


def _backup(database: Path, target: Path) -> None:
    """SQLite's online backup (`sqlite3 DB ".backup TARGET"` in the runbook)."""
    with closing(sqlite3.connect(database)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def _home_with(home: Path, database: Path, target: Path) -> Path:
    """A home of its own around ``database``: the settings, TLS and vault of ``home``."""
    skip = shutil.ignore_patterns("bastion.db*", "run", "logs", "keys", "serve-*.out")
    shutil.copytree(home, target, ignore=skip)
    target.chmod(0o700)
    _backup(database, target / "bastion.db")
    (target / "bastion.db").chmod(0o600)
    return target


def _stored(database: Path, index: int) -> tuple[bytes, str]:
    """Entry ``index`` as stored, and the integrity check (`sqlite3 -readonly` in the runbook)."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        body = bytes(db.execute("SELECT body FROM ledger_entries WHERE idx = ?", (index,)).fetchone()[0])
        integrity = str(db.execute("PRAGMA integrity_check").fetchone()[0])
    return body, integrity


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_runbook_5_a_ledger_verification_failure(rig: Rig, tmp_path: Path) -> None:
    gateway, home = rig.gateway, rig.home
    bought = market(gateway, "ops", "buy", "2")  # not runbook 4's order again: that is a loop
    assert bought.status == 201, bought.body
    # Before: the last export, kept off the host; then the ledger grows.
    offhost = tmp_path / "off-host"
    offhost.mkdir()
    last = offhost / "last-export.jsonl"
    bastion(home, "ledger", "export", "--out", str(last))
    assert market(gateway, "ops", "sell", "2").status == 201
    # The failing database: a copy of the live one (a backup, say) in which that order was rewritten.
    damaged = _home_with(home, home / "bastion.db", tmp_path / "backup-home")
    index = next(
        e["index"]
        for e in decoded(last)
        if e["kind"] == "order.submit" and e["data"]["order_id"] == bought.body["id"]
    )
    with closing(sqlite3.connect(damaged / "bastion.db")) as db, db:  # closed: nothing left in a WAL
        body = bytes(db.execute("SELECT body FROM ledger_entries WHERE idx = ?", (index,)).fetchone()[0])
        forged = body.replace(b'"side":"buy"', b'"side":"sell"', 1)
        assert forged != body
        db.execute("UPDATE ledger_entries SET body = ? WHERE idx = ?", (forged, index))

    # 1. Record the failure: exit 1, naming the entry.
    incident = tmp_path / "incident"
    incident.mkdir()
    failed = bastion(damaged, "ledger", "verify", "--json", check=False)
    assert failed.code == 1
    report = json.loads(failed.stdout)
    assert report["ok"] is False and report["first_bad_index"] == index and report["why"]
    (incident / "verify-failure.json").write_text(failed.stdout)

    # 2. The evidence: a copy, its digest, read only; verify leaves it byte for byte the same.
    evidence_home = incident / "evidence-home"
    evidence_home.mkdir(mode=0o700)
    shutil.copy(home / "bastion.toml", evidence_home / "bastion.toml")
    evidence = evidence_home / "bastion.db"
    _backup(damaged / "bastion.db", evidence)
    evidence.chmod(0o400)
    digest = _sha256(evidence)
    again = json.loads(bastion(evidence_home, "ledger", "verify", "--json", check=False).stdout)
    assert (again["ok"], again["first_bad_index"]) == (False, index)
    assert _sha256(evidence) == digest and not (evidence_home / "bastion.db-wal").exists()
    # doctor, on a working copy of the evidence, fails its ledger check naming the entry
    work = _home_with(home, evidence, incident / "work-home")
    doctor = bastion(work, "doctor", "--json", check=False)
    assert doctor.code == 1
    ledger_check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "ledger")
    assert ledger_check["level"] == "fail" and f"entry {index}" in ledger_check["message"]
    assert "incident-response.md" in ledger_check["fix"]

    # 3. (The live database is not the one failing: no halt.)
    # 4. The other records: the live database, the last export, and that one extends the other.
    live = bastion_json(home, "ledger", "verify")
    assert live["ok"] is True
    public_key = str(rig.public_key)
    offline = bastion_json(offhost, "ledger", "verify", "--export", str(last), "--public-key", public_key)
    assert offline["ok"] is True
    heads = [json.loads(line)["head"] for line in last.read_text().splitlines() if '"head"' in line]
    head = max(heads, key=lambda h: h["tree_size"])
    assert head["tree_size"] == offline["signed_size"] and head["tree_size"] < live["entries"]
    sizes = (str(head["tree_size"]), str(live["entries"]))
    proof = json.loads(bastion(home, "ledger", "consistency", *sizes).stdout)
    assert proof["roots"][0] == head["root_hash"]
    assert proof["roots"][1] != head["root_hash"]  # the ledger grew since

    # 5. Compare the bad entry: the export and the live database agree; the copy was changed.
    exported = next(
        base64.b64decode(item["body"])
        for item in map(json.loads, last.read_text().splitlines()[1:])
        if item.get("index") == index
    )
    stored_copy, integrity = _stored(evidence, index)
    stored_live, _ = _stored(home / "bastion.db", index)
    assert stored_live == exported != stored_copy
    assert json.loads(exported)["data"]["side"] == "buy" and json.loads(stored_copy)["data"]["side"] == "sell"

    # 6. A well-formed database with a bad entry: an edit, not storage damage (runbook 3).
    assert integrity == "ok"
    assert _sha256(evidence) == digest
