"""Acceptance (issue 7): receipts, proofs and signed heads end to end, and tampering that only
signed heads catch (truncation, a rewritten history, a forged head), online and offline."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.client import BastionClient
from bastion.crypto.keys import load_ed25519_private
from bastion.ledger.chain import decode_body, make_entry
from bastion.ledger.heads import SignedTreeHead
from bastion.ledger.merkle import ProofError, verify_consistency
from tests.e2e.conftest import Gateway, cli
from tests.e2e.test_ledger_cli import snapshot, verify
from tests.e2e.test_orders import cid

pytestmark = pytest.mark.e2e


def client(gateway: Gateway, who: str) -> BastionClient:
    key = gateway.keys[who]
    return BastionClient(gateway.url, key.key_id, key.private_key_path, ca_cert=gateway.cert)


def public_pem(gateway: Gateway) -> bytes:
    return cli(gateway.home, "ledger", "public-key").stdout.encode()


def market_order(bot: BastionClient) -> dict[str, Any]:
    return bot.place_order(cid("rcpt"), "GOOG", "buy", "market", "1")


def test_an_order_comes_with_a_receipt_the_sdk_verifies(gateway: Gateway) -> None:
    with client(gateway, "alice") as bot:
        order = market_order(bot)
        receipt = order["receipt"]
        assert receipt["tree_head"]["tree_size"] > receipt["index"]
        entry = bot.verify_receipt(order, public_pem(gateway))
        # non-repudiation: the entry holds what the key signed, checkable with its public key
        signed = entry["data"]["signature"]
        public = load_ed25519_private(gateway.keys["alice"].private_key_path.read_bytes()).public_key()  # type: ignore[union-attr]
        public.verify(base64.b64decode(signed["value"]), base64.b64decode(signed["base"]))
        assert entry["data"]["route"] == "place_order" and entry["data"]["verdict"] == "allow"
        forged = dict(order, receipt=dict(receipt, leaf_hash="00" * 32))
        with pytest.raises(ProofError):
            bot.verify_receipt(forged, public_pem(gateway))
        resigned = dict(receipt["tree_head"], root_hash="11" * 32)
        with pytest.raises(ProofError):
            bot.verify_receipt(dict(order, receipt=dict(receipt, tree_head=resigned)), public_pem(gateway))


def test_a_key_sees_only_its_own_accounts_entries(gateway: Gateway) -> None:
    with client(gateway, "alice") as alice:
        receipt = market_order(alice)["receipt"]
    response = gateway.call(
        "bob",
        "GET",
        f"/v1/ledger/entries/{receipt['index']}/proof",
        query=f"tree_size={receipt['tree_head']['tree_size']}",
    )
    assert response.status == 404 and response.body["error"]["code"] == "NOT_FOUND"
    beyond = gateway.call(
        "alice", "GET", f"/v1/ledger/entries/{receipt['index']}/proof", query="tree_size=999999999"
    )
    assert beyond.status == 404


def test_heads_grow_consistently(gateway: Gateway) -> None:
    key = load_pem(public_pem(gateway))
    first = SignedTreeHead.from_json(gateway.call("alice", "GET", "/v1/ledger/head").body)
    first.verify(key)
    with client(gateway, "alice") as bot:
        market_order(bot)
        second = SignedTreeHead.from_json(bot.ledger_head())
        second.verify(key)
        assert second.tree_size > first.tree_size
        proof = bot.ledger_consistency(first.tree_size, second.tree_size)
    verify_consistency(first.tree_size, second.tree_size, first.root_hash, second.root_hash, proof)
    bad = gateway.call(
        "alice", "GET", "/v1/ledger/consistency", query=f"first={second.tree_size}&second={first.tree_size}"
    )
    assert bad.status == 404


def load_pem(pem: bytes) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem)
    assert isinstance(key, Ed25519PublicKey)
    return key


def _signed_copy(gateway: Gateway, tmp_path: Path) -> Path:
    assert gateway.call("alice", "GET", "/v1/ledger/head").status == 200  # a head over everything so far
    home = snapshot(gateway, tmp_path / "copy")  # verification needs the database, nothing secret
    code, report = verify(home)
    # the head request's own entry comes after the head it returned
    assert code == 0 and report["unsigned_tail"] <= 1 and report["signed_heads"] >= 1
    return home


def test_truncation_is_caught(gateway: Gateway, tmp_path: Path) -> None:
    home = _signed_copy(gateway, tmp_path)
    with sqlite3.connect(home / "bastion.db") as db:
        last = db.execute("SELECT max(idx) FROM ledger_entries").fetchone()[0]
        db.execute("DELETE FROM ledger_entries WHERE idx > ?", (last - 3,))
    code, report = verify(home)
    assert code == 1 and "truncated" in str(report["why"]) and report["first_bad_index"] == last - 2


def test_a_rewritten_history_is_caught_as_a_fork(gateway: Gateway, tmp_path: Path) -> None:
    home = _signed_copy(gateway, tmp_path)
    with sqlite3.connect(home / "bastion.db") as db:
        rows = db.execute("SELECT idx, body FROM ledger_entries ORDER BY idx").fetchall()
        prev = bytes(bytes.fromhex(decode_body(bytes(rows[3][1])).prev))
        for index, body in rows[3:]:  # change entry 3, then re-chain everything after it
            old = decode_body(bytes(body))
            data = dict(old.data, forged=True) if index == 3 else old.data
            row = make_entry(index, prev, old.kind, old.time_us, data)
            db.execute(
                "UPDATE ledger_entries SET body = ?, hash = ? WHERE idx = ?", (row.body, row.hash, index)
            )
            prev = row.hash
    code, report = verify(home)
    assert code == 1 and "fork" in str(report["why"])


def test_a_forged_head_is_caught(gateway: Gateway, tmp_path: Path) -> None:
    home = _signed_copy(gateway, tmp_path)
    with sqlite3.connect(home / "bastion.db") as db:
        size = db.execute("SELECT max(tree_size) FROM ledger_heads").fetchone()[0]
        db.execute("UPDATE ledger_heads SET signature = ? WHERE tree_size = ?", (b"\x01" * 64, size))
    code, report = verify(home)
    assert code == 1 and "signature" in str(report["why"])


def _offline(gateway: Gateway, export: Path, key: Path) -> tuple[int, dict[str, Any]]:
    args = ("ledger", "verify", "--export", str(export), "--public-key", str(key), "--json")
    result = cli(gateway.home, *args, check=False)
    return result.returncode, json.loads(result.stdout)


def test_an_export_verifies_offline_with_only_the_public_key(gateway: Gateway, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = tmp_path / "ledger.jsonl"
    cli(gateway.home, "ledger", "export", "--out", str(out))
    original = out.read_text()
    key = tmp_path / "ledger.pub"
    key.write_bytes(public_pem(gateway))
    code, ok = _offline(gateway, out, key)
    assert code == 0 and ok["ok"] and ok["unsigned_tail"] == 0 and ok["entries"] > 20

    lines = original.splitlines()
    edited = json.loads(lines[10])
    body = base64.b64decode(edited["body"]).replace(b'"kind":"', b'"kind":"x', 1)
    edited["body"] = base64.b64encode(body).decode()
    out.write_text("\n".join([*lines[:10], json.dumps(edited), *lines[11:]]) + "\n")
    code, bad = _offline(gateway, out, key)
    assert code == 1 and bad["first_bad_index"] in (9, 10)

    other = tmp_path / "other.pub"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    out.write_text(original)  # the untouched export, checked with somebody else's key: refused
    code, wrong = _offline(gateway, out, other)
    assert code == 1 and "signature" in str(wrong["why"])


def test_proofs_from_the_cli(gateway: Gateway) -> None:
    from bastion.ledger.merkle import verify_inclusion

    with client(gateway, "alice") as bot:
        receipt = market_order(bot)["receipt"]
    size = receipt["tree_head"]["tree_size"]
    proof = json.loads(
        cli(gateway.home, "ledger", "proof", str(receipt["index"]), "--tree-size", str(size)).stdout
    )
    verify_inclusion(
        bytes.fromhex(receipt["leaf_hash"]),
        receipt["index"],
        size,
        [bytes.fromhex(p) for p in proof["proof"]],
        bytes.fromhex(receipt["tree_head"]["root_hash"]),
    )
    later = json.loads(cli(gateway.home, "ledger", "consistency", str(size - 1), str(size)).stdout)
    verify_consistency(
        size - 1,
        size,
        bytes.fromhex(later["roots"][0]),
        bytes.fromhex(later["roots"][1]),
        [bytes.fromhex(p) for p in later["proof"]],
    )
    assert cli(gateway.home, "ledger", "proof", "999999999", check=False).returncode == 2
