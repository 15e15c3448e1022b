"""Acceptance: after an end-to-end run with Ed25519 and HMAC keys and a venue credential, no
private key, HMAC secret, venue credential, master key or full signature is in the logs, the
database (with its WAL) or any response, raw, hex or base64.  The one exception, on purpose:
Ed25519 request signatures are kept in the ledger's entries as evidence (non-repudiation,
issue 7); they are still never in a log or a response.  Runs last in this package."""

from __future__ import annotations

import base64
import re
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bastion.crypto.keys import load_ed25519_private
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e


def forms(secret: bytes) -> set[bytes]:
    """The ways a secret could be written down."""
    out = {
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    }
    if len(secret) >= 16:
        out.add(secret)
    return out


def test_no_secret_leaks_anywhere(gateway: Gateway) -> None:
    # Some traffic of every kind first, so the scan never looks at an empty run.
    assert gateway.call("alice", "GET", "/v1/account").status == 200
    assert gateway.call(
        "bob",
        "POST",
        "/v1/orders",
        {"client_order_id": "scan-1", "symbol": "GOOG", "side": "buy", "type": "market", "quantity": "1"},
    ).status in (200, 201)
    assert gateway.raw("GET", "/v1/account").status == 401

    secrets: dict[str, set[bytes]] = {}
    for name, key in gateway.keys.items():
        if key.secret is not None:
            secrets[f"{name} HMAC secret"] = forms(key.secret.encode()) | {key.secret.encode()}
            continue
        assert key.private_key_path is not None
        pem = key.private_key_path.read_bytes()
        private = load_ed25519_private(pem)
        raw = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        body = b"".join(pem.split(b"\n")[1:-2])
        secrets[f"{name} private key"] = forms(raw) | {body}
    for name, value in gateway.other_secrets.items():
        secrets[name] = forms(value) | {value}
    with sqlite3.connect(gateway.home / "bastion.db") as db:
        for keyfile in sorted((gateway.home / "vault").glob("master-*.key")):
            secrets[f"vault {keyfile.name}"] = forms(keyfile.read_bytes())
        assert db.execute("SELECT count(*) FROM venue_credentials").fetchone()[0] == 1
    evidence: set[str] = set()  # Ed25519 signatures: kept in the ledger on purpose (issue 7)
    for n, (header, hmac) in enumerate(zip(gateway.sent_signatures, gateway.sent_hmac, strict=True)):
        value = re.search(r":([A-Za-z0-9+/=]+):", header)
        assert value is not None
        signature = base64.b64decode(value.group(1))
        secrets[f"signature {n}"] = forms(signature)
        if not hmac:
            evidence.add(f"signature {n}")
    assert evidence  # HMAC signatures are sent by tests/e2e/test_hmac.py in a whole run
    assert len(secrets) > 20

    haystacks: dict[str, bytes] = {f"response {i}": r for i, r in enumerate(gateway.responses)}
    files = [
        gateway.home / "bastion.db",
        gateway.home / "bastion.db-wal",
        gateway.home / "serve.out",
        *sorted((gateway.home / "logs").glob("*")),
    ]
    for path in files:
        if Path(path).exists():
            haystacks[str(path)] = Path(path).read_bytes()
    assert any(name.endswith("bastion.log") for name in haystacks)
    assert len(haystacks[str(gateway.home / "logs" / "bastion.log")]) > 1000

    leaks = [
        f"{secret_name} in {where}"
        for secret_name, variants in secrets.items()
        for where, data in haystacks.items()
        for variant in variants
        if variant and variant in data and not (secret_name in evidence and "bastion.db" in where)
    ]
    assert leaks == []
