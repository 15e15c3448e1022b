"""Acceptance: each error case over the wire, with its stable code, and its ledger entry."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from requests_http_signature import HTTPSignatureAuth, algorithms

from bastion.clock import FakeClock
from bastion.config import load_settings
from bastion.crypto.digest import content_digest
from bastion.crypto.keys import generate_ed25519, new_key_id, private_key_pem, write_secret_file
from bastion.domain.principals import Scope
from bastion.services import Services
from tests.e2e.conftest import Gateway, Key, cli

pytestmark = pytest.mark.e2e
ORDER = {
    "client_order_id": "err-1",
    "symbol": "GOOG",
    "side": "buy",
    "type": "limit",
    "quantity": "1",
    "price": "1.00",
}


def error(response: object, status: int, code: str) -> dict[str, str]:
    assert response.status == status, response.body  # type: ignore[attr-defined]
    body = response.body["error"]  # type: ignore[attr-defined]
    assert body["code"] == code
    assert body["request_id"].startswith("req_")
    assert "Traceback" not in json.dumps(body)
    return body  # type: ignore[no-any-return]


def auth_failure(gateway: Gateway, response: object, expected_reason: str) -> None:
    body = error(response, 401, "AUTHENTICATION_FAILED")
    assert body["message"] == "Authentication failed."
    assert set(body) == {"code", "message", "request_id"}  # no hint of the reason
    entry = gateway.entry_for(body["request_id"])
    assert entry["verdict"] == "deny"
    assert expected_reason in entry["reason"]


def open_order(gateway: Gateway, who: str = "alice") -> str:
    body = dict(ORDER, client_order_id=f"open-{time.time_ns()}")
    response = gateway.call(who, "POST", "/v1/orders", body)
    assert response.status == 201
    return str(response.body["id"])


def test_unknown_key(gateway: Gateway) -> None:
    path = gateway.home / "stranger.pem"
    write_secret_file(path, private_key_pem(generate_ed25519()))
    gateway.keys["stranger"] = Key(new_key_id(), path)  # a well-formed id Bastion never issued
    auth_failure(gateway, gateway.call("stranger", "GET", "/v1/account"), "unknown key")


def test_revoked_key(gateway: Gateway) -> None:
    assert gateway.call("revoked", "GET", "/v1/account").status == 200
    cli(gateway.home, "keys", "revoke", gateway.keys["revoked"].key_id)
    auth_failure(gateway, gateway.call("revoked", "GET", "/v1/account"), "revoked key")


def test_expired_key(gateway: Gateway) -> None:
    past = FakeClock()  # 2026-01-05: a 1-day key issued then is long expired

    async def issue() -> str:
        services = Services.build(gateway.home, load_settings(gateway.home), clock=past)
        await services.start()
        try:
            private = generate_ed25519()
            record, _ = await services.create_key(
                account="alice",
                scopes=frozenset(Scope),
                public_key=private.public_key(),
                lifetime=timedelta(days=1),
            )
            path = gateway.home / "expired.pem"
            write_secret_file(path, private_key_pem(private))
            gateway.keys["expired"] = Key(record.key_id, Path(path))
            return record.key_id
        finally:
            await services.close()

    asyncio.run(issue())
    auth_failure(gateway, gateway.call("expired", "GET", "/v1/account"), "expired key")


def test_bad_signature(gateway: Gateway) -> None:
    headers = gateway.signed_headers("alice", "GET", "/v1/account")
    other = gateway.signed_headers("bob", "GET", "/v1/account")
    headers["signature"] = other["signature"]
    auth_failure(gateway, gateway.raw("GET", "/v1/account", headers=headers), "signature does not verify")


def test_stale_and_future_created(gateway: Gateway) -> None:
    now = int(time.time())
    for created, reason in ((now - 30, "old"), (now + 30, "future")):
        headers = gateway.signed_headers("alice", "GET", "/v1/account", created=created)
        auth_failure(gateway, gateway.raw("GET", "/v1/account", headers=headers), reason)


def test_missing_headers(gateway: Gateway) -> None:
    auth_failure(gateway, gateway.raw("GET", "/v1/account"), "missing signature-input")
    headers = gateway.signed_headers("alice", "GET", "/v1/account")
    del headers["signature"]
    auth_failure(gateway, gateway.raw("GET", "/v1/account", headers=headers), "missing signature")


def test_a_replayed_request_is_refused(gateway: Gateway) -> None:
    raw = json.dumps(dict(ORDER, client_order_id=f"replay-{time.time_ns()}")).encode()
    headers = gateway.signed_headers("alice", "POST", "/v1/orders", body=raw)
    first = gateway.raw("POST", "/v1/orders", raw, headers)
    assert first.status == 201
    auth_failure(gateway, gateway.raw("POST", "/v1/orders", raw, headers), "nonce already used")


def test_body_changed_after_signing(gateway: Gateway) -> None:
    raw = json.dumps(dict(ORDER, client_order_id=f"tamper-{time.time_ns()}")).encode()
    headers = gateway.signed_headers("alice", "POST", "/v1/orders", body=raw)
    tampered = raw.replace(b'"quantity": "1"', b'"quantity": "9"')
    assert tampered != raw
    auth_failure(gateway, gateway.raw("POST", "/v1/orders", tampered, headers), "does not match the body")
    # Even with a recomputed digest, the signature covers the digest:
    headers = gateway.signed_headers("alice", "POST", "/v1/orders", body=raw)
    headers["content-digest"] = content_digest(tampered)
    auth_failure(gateway, gateway.raw("POST", "/v1/orders", tampered, headers), "signature does not verify")


def test_path_and_query_changed_after_signing(gateway: Gateway) -> None:
    order_id = open_order(gateway)
    headers = gateway.signed_headers("alice", "DELETE", f"/v1/orders/{order_id}")
    other = open_order(gateway)
    auth_failure(gateway, gateway.raw("DELETE", f"/v1/orders/{other}", headers=headers), "does not verify")
    headers = gateway.signed_headers("alice", "GET", "/v1/orders", query="status=open")
    auth_failure(gateway, gateway.raw("GET", "/v1/orders?status=all", headers=headers), "does not verify")
    assert gateway.call("alice", "GET", f"/v1/orders/{other}").body["status"] == "new"


def test_all_authentication_failures_look_alike(gateway: Gateway) -> None:
    responses = [
        gateway.raw("GET", "/v1/account"),
        gateway.raw("GET", "/v1/account", headers={"signature-input": "x", "signature": "y"}),
        gateway.raw("GET", "/v1/account", headers=gateway.signed_headers("alice", "GET", "/v1/markets")),
    ]
    shapes = {(r.status, r.body["error"]["code"], r.body["error"]["message"]) for r in responses}
    assert shapes == {(401, "AUTHENTICATION_FAILED", "Authentication failed.")}


def test_missing_scope_is_403(gateway: Gateway) -> None:
    error(gateway.call("alice_read", "POST", "/v1/orders", ORDER), 403, "FORBIDDEN")
    order_id = open_order(gateway)
    error(gateway.call("alice_trade", "DELETE", f"/v1/orders/{order_id}"), 403, "FORBIDDEN")


def test_another_accounts_order_is_404_for_read_and_cancel(gateway: Gateway) -> None:
    order_id = open_order(gateway, "alice")
    read = error(gateway.call("bob", "GET", f"/v1/orders/{order_id}"), 404, "NOT_FOUND")
    cancel = error(gateway.call("bob", "DELETE", f"/v1/orders/{order_id}"), 404, "NOT_FOUND")
    missing = error(gateway.call("bob", "GET", "/v1/orders/ord_" + "x" * 24), 404, "NOT_FOUND")
    assert read["message"] == cancel["message"] == missing["message"]
    assert "belongs to account alice" in gateway.entry_for(cancel["request_id"])["reason"]
    assert gateway.call("alice", "GET", f"/v1/orders/{order_id}").body["status"] == "new"
    listed = gateway.call("bob", "GET", "/v1/orders", query="limit=500").body["orders"]
    assert order_id not in {o["id"] for o in listed}


def test_bad_requests_are_400(gateway: Gateway) -> None:
    for body in (
        ORDER | {"account": "bob"},
        ORDER | {"quantity": "1e3"},
        ORDER | {"quantity": 1},
        {k: v for k, v in ORDER.items() if k != "symbol"},
    ):
        error(gateway.call("alice", "POST", "/v1/orders", body), 400, "BAD_REQUEST")
    raw = b"{not json"
    error(
        gateway.raw(
            "POST", "/v1/orders", raw, gateway.signed_headers("alice", "POST", "/v1/orders", body=raw)
        ),
        400,
        "BAD_REQUEST",
    )
    error(gateway.call("alice", "GET", "/v1/orders", query="status=sideways"), 400, "BAD_REQUEST")


def test_undeclared_routes_and_methods(gateway: Gateway) -> None:
    body = error(gateway.call("alice", "GET", "/v1/withdrawals"), 404, "NOT_FOUND")
    assert gateway.entry_for(body["request_id"])["stage"] == "edge"
    error(gateway.call("alice", "PUT", "/v1/orders", ORDER), 405, "METHOD_NOT_ALLOWED")


def test_oversized_body_is_413(gateway: Gateway) -> None:
    raw = json.dumps(ORDER | {"client_order_id": "x" * 70_000}).encode()
    headers = gateway.signed_headers("alice", "POST", "/v1/orders", body=raw)
    error(gateway.raw("POST", "/v1/orders", raw, headers), 413, "PAYLOAD_TOO_LARGE")


def test_wrong_content_type_is_415(gateway: Gateway) -> None:
    raw = json.dumps(ORDER).encode()
    headers = gateway.signed_headers("alice", "POST", "/v1/orders", body=raw) | {"content-type": "text/plain"}
    error(gateway.raw("POST", "/v1/orders", raw, headers), 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"quantity": "0.5"}, "LOT_SIZE"),
        ({"price": "1.001"}, "TICK_SIZE"),
        ({"price": "0.50"}, "MIN_NOTIONAL"),
        ({"quantity": "100000000", "price": "100.00"}, "INSUFFICIENT_BALANCE"),
    ],
)
def test_venue_and_instrument_rules_are_422_with_reason(
    gateway: Gateway, change: dict[str, str], reason: str
) -> None:
    body = ORDER | change | {"client_order_id": f"r-{reason[:8]}-{time.time_ns() % 10**12}"}
    response = gateway.call("alice", "POST", "/v1/orders", body)
    assert error(response, 422, "ORDER_REJECTED")["reason"] == reason
    retry = gateway.call("alice", "POST", "/v1/orders", body)
    assert error(retry, 422, "ORDER_REJECTED")["reason"] == reason


def test_requests_http_signature_client_is_accepted(gateway: Gateway) -> None:
    key = gateway.keys["alice"]
    auth = HTTPSignatureAuth(
        signature_algorithm=algorithms.ED25519,
        key=key.private_key_path.read_bytes(),
        key_id=key.key_id,
        use_nonce=True,
        covered_component_ids=("@method", "@authority", "@target-uri", "content-digest"),
    )
    session = requests.Session()
    session.trust_env = False  # the environment's CA bundle must not override the pinned certificate
    session.verify = str(gateway.cert)
    body = ORDER | {"client_order_id": f"rhs-{time.time_ns()}"}
    placed = session.post(f"{gateway.url}/v1/orders", json=body, auth=auth, timeout=30)
    assert placed.status_code == 201, placed.text
    listed = session.get(f"{gateway.url}/v1/orders?status=open&symbol=GOOG", auth=auth, timeout=30)
    assert placed.json()["id"] in {o["id"] for o in listed.json()["orders"]}
    canceled = session.delete(f"{gateway.url}/v1/orders/{placed.json()['id']}", auth=auth, timeout=30)
    assert canceled.json()["status"] == "canceled"


def test_security_headers_on_every_response(gateway: Gateway) -> None:
    for response in (
        gateway.call("alice", "GET", "/v1/account"),
        gateway.raw("GET", "/v1/account"),
        gateway.raw("GET", "/nope"),
        gateway.raw("GET", "/healthz"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert "max-age" in response.headers["strict-transport-security"]
        assert "server" not in response.headers
