"""Acceptance (issue 4): HMAC-SHA256 keys through the real server, with the SDK and with an
independent signer; the secret is printed once and lives only sealed."""

from __future__ import annotations

import sqlite3
import time

import pytest
import requests
from requests_http_signature import HTTPSignatureAuth, algorithms

from bastion.client import BastionAPIError, BastionClient
from tests.e2e.conftest import Gateway, cli_json

pytestmark = pytest.mark.e2e


def test_the_sdk_trades_with_an_hmac_key(gateway: Gateway) -> None:
    key = gateway.keys["alice_hmac"]
    assert key.secret is not None
    assert key.secret.startswith("bsk_")
    client = BastionClient(gateway.url, key.key_id, hmac_secret=key.secret, ca_cert=gateway.cert)
    order = client.place_order(f"h-{time.time_ns() % 10**12}", "GOOG", "buy", "market", "1")
    assert order["status"] == "filled"
    entry = gateway.ledger_entries()[-1]["data"]
    assert entry["key_id"] == key.key_id
    assert entry["outcome"]["vault_open"]["purpose"] == "bastion-key-hmac"
    assert entry["outcome"]["vault_open"]["process"] == gateway.process.pid
    wrong = BastionClient(gateway.url, key.key_id, hmac_secret=key.secret + "x", ca_cert=gateway.cert)
    with pytest.raises(BastionAPIError) as caught:
        wrong.account()
    assert (caught.value.status, caught.value.code) == (401, "AUTHENTICATION_FAILED")


def test_requests_http_signature_hmac_is_accepted(gateway: Gateway) -> None:
    key = gateway.keys["alice_hmac"]
    assert key.secret is not None
    auth = HTTPSignatureAuth(
        signature_algorithm=algorithms.HMAC_SHA256,
        key=key.secret.encode(),
        key_id=key.key_id,
        use_nonce=True,
        covered_component_ids=("@method", "@authority", "@target-uri", "content-digest"),
    )
    session = requests.Session()
    session.trust_env = False
    session.verify = str(gateway.cert)
    body = {
        "client_order_id": f"rh-{time.time_ns() % 10**12}",
        "symbol": "GOOG",
        "side": "sell",
        "type": "market",
        "quantity": "1",
    }
    placed = session.post(f"{gateway.url}/v1/orders", json=body, auth=auth, timeout=30)
    assert placed.status_code == 201, placed.text
    assert session.get(f"{gateway.url}/v1/account", auth=auth, timeout=30).status_code == 200


def test_the_secret_is_stored_only_sealed(gateway: Gateway) -> None:
    key = gateway.keys["alice_hmac"]
    assert key.secret is not None
    with sqlite3.connect(gateway.home / "bastion.db") as db:
        sealed, alg, public = db.execute(
            "SELECT secret_sealed, alg, public_key FROM api_keys WHERE key_id = ?", (key.key_id,)
        ).fetchone()
    assert alg == "hmac-sha256"
    assert bytes(public) == b""
    assert bytes(sealed).startswith(b"BV1")
    assert key.secret.encode() not in bytes(sealed)


def test_master_key_rotation_while_serving(gateway: Gateway) -> None:
    key = gateway.keys["alice_hmac"]
    assert key.secret is not None
    client = BastionClient(gateway.url, key.key_id, hmac_secret=key.secret, ca_cert=gateway.cert)
    assert client.account()["account"] == "alice"
    rotated = cli_json(gateway.home, "vault", "rotate-master")
    assert rotated["versions_in_use"] == [rotated["target_version"]]
    # The running server never saw the new master key; it loads it on first need.
    assert client.account()["account"] == "alice"
    with sqlite3.connect(gateway.home / "bastion.db") as db:
        versions = {
            bytes(r[0])[3:7]
            for r in db.execute("SELECT secret_sealed FROM api_keys WHERE secret_sealed IS NOT NULL")
        }
    assert versions == {rotated["target_version"].to_bytes(4, "big")}
