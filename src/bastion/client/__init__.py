"""Bastion's Python SDK: signs every request (RFC 9421, Ed25519 or HMAC-SHA256) and verifies the server's
certificate against the one ``bastion init`` created (or the system store).

    from bastion.client import BastionClient
    client = BastionClient("https://127.0.0.1:8443", key_id, "bst_....pem", ca_cert=".bastion/tls/cert.pem")
    order = client.place_order("my-id-1", "BTC-USD", "buy", "limit", "0.01", price="20000")
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.crypto.httpsig import sign_request
from bastion.crypto.keys import load_ed25519_private
from bastion.tls import client_context

__all__ = ["BastionAPIError", "BastionClient", "BastionConnectionError"]


class BastionAPIError(Exception):
    """An error answer from Bastion: ``status``, stable ``code``, ``message``, ``request_id``
    and, for rejected orders, a machine-readable ``reason``."""

    def __init__(self, status: int, code: str, message: str, request_id: str, reason: str | None) -> None:
        super().__init__(f"{status} {code}: {message} (request {request_id})")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.reason = reason


class BastionConnectionError(ConnectionError):
    """The connection failed, or the answer was cut off before it was complete (the server
    stopped mid-answer).  Whether a write took effect is unknown: send the same request again
    with the same ``client_order_id`` (an order is placed once, however often it is sent) or
    look the order up.  An ``OSError``, like every other connection failure."""


class BastionClient:
    def __init__(
        self,
        base_url: str,
        key_id: str,
        private_key: Ed25519PrivateKey | str | Path | None = None,
        *,
        hmac_secret: str | None = None,
        ca_cert: str | Path | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("base_url must look like https://host:port")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._authority = parts.netloc
        if (private_key is None) == (hmac_secret is None):
            raise ValueError("give exactly one of private_key (Ed25519) or hmac_secret")
        self._key: Ed25519PrivateKey | None = None
        self._hmac = hmac_secret.encode() if hmac_secret is not None else None
        if isinstance(private_key, Ed25519PrivateKey):
            self._key = private_key
        elif private_key is not None:
            self._key = load_ed25519_private(Path(private_key).read_bytes())
        self._key_id = key_id
        self._timeout = timeout
        self._clock = clock
        self._context = (
            client_context(Path(ca_cert) if ca_cert else None) if parts.scheme == "https" else None
        )
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None

    # -- transport ------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._context is not None:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> BastionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def signed_headers(self, method: str, path: str, query: str, body: bytes) -> dict[str, str]:
        headers = sign_request(
            private_key=self._key,
            hmac_secret=self._hmac,
            key_id=self._key_id,
            method=method,
            url_scheme=self._scheme,
            authority=self._authority,
            path=path,
            query=query,
            body=body,
            created=int(self._clock()),
        )
        if body:
            headers["content-type"] = "application/json"
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> Any:
        raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        query_text = urlencode(dict(query)) if query else ""
        headers = self.signed_headers(method, path, query_text, raw)
        headers["host"] = self._authority
        target = path + ("?" + query_text if query_text else "")
        with self._lock:
            for attempt in (1, 2):  # one reconnect if the kept-alive connection was closed
                conn = self._connection()
                try:
                    conn.request(method, target, body=raw or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    break
                except (
                    ConnectionError,
                    http.client.RemoteDisconnected,
                    http.client.CannotSendRequest,
                ) as exc:
                    self._conn = None
                    conn.close()
                    if attempt == 2:
                        raise BastionConnectionError(
                            f"{method} {path}: the connection failed ({type(exc).__name__}); "
                            "retry with the same client_order_id, or look the order up"
                        ) from exc
                except http.client.HTTPException as exc:  # an answer cut short or garbled
                    self._conn = None
                    conn.close()
                    raise BastionConnectionError(
                        f"the answer to {method} {path} was incomplete ({type(exc).__name__}); "
                        "retry with the same client_order_id, or look the order up"
                    ) from exc
        payload = json.loads(data) if data else None
        if response.status >= 400:
            error = (payload or {}).get("error", {}) if isinstance(payload, dict) else {}
            raise BastionAPIError(
                response.status,
                error.get("code", "UNKNOWN"),
                error.get("message", ""),
                error.get("request_id", ""),
                error.get("reason"),
            )
        return payload

    # -- API ------------------------------------------------------------------------------
    def place_order(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        type: str,
        quantity: str,
        *,
        price: str | None = None,
        time_in_force: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_order_id": client_order_id,
            "symbol": symbol,
            "side": side,
            "type": type,
            "quantity": quantity,
        }
        if price is not None:
            body["price"] = price
        if time_in_force is not None:
            body["time_in_force"] = time_in_force
        result: dict[str, Any] = self.request("POST", "/v1/orders", body=body)
        return result

    def get_order(self, order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/orders/{order_id}")
        return result

    def cancel_order(self, order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/v1/orders/{order_id}")
        return result

    def list_orders(
        self, *, status: str | None = None, symbol: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        query = {
            k: str(v) for k, v in (("status", status), ("symbol", symbol), ("limit", limit)) if v is not None
        }
        result: list[dict[str, Any]] = self.request("GET", "/v1/orders", query=query)["orders"]
        return result

    def account(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/account")
        return result

    def markets(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/markets")["markets"]
        return result

    def ticker(self, symbol: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/markets/{symbol}/ticker")
        return result

    # -- the ledger: receipts and proofs (RFC 9162) -------------------------------------------
    def ledger_head(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/ledger/head")
        return result

    def ledger_proof(self, index: int, tree_size: int) -> dict[str, Any]:
        query = {"tree_size": str(tree_size)}
        result: dict[str, Any] = self.request("GET", f"/v1/ledger/entries/{index}/proof", query=query)
        return result

    def ledger_consistency(self, first: int, second: int) -> list[bytes]:
        query = {"first": str(first), "second": str(second)}
        return [bytes.fromhex(p) for p in self.request("GET", "/v1/ledger/consistency", query=query)["proof"]]

    def verify_receipt(self, order: Mapping[str, Any], ledger_public_key: bytes) -> dict[str, Any]:
        """Check an order answer's receipt against the ledger's public key (PEM, from
        ``bastion ledger public-key``): the head's signature, then the inclusion proof fetched
        from Bastion, then that the entry names this order's key and carries the signature
        this client sent.  Returns the entry; raises ``ProofError`` on any mismatch."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        from bastion.ledger.heads import verify_receipt
        from bastion.ledger.merkle import ProofError

        public = load_pem_public_key(ledger_public_key)
        if not isinstance(public, Ed25519PublicKey):
            raise ProofError("the ledger's public key is not Ed25519")
        receipt = order.get("receipt")
        if not isinstance(receipt, dict):
            raise ProofError("the answer carries no receipt")
        head = receipt["tree_head"]
        answer = self.ledger_proof(int(receipt["index"]), int(head["tree_size"]))
        entry = base64.b64decode(answer["entry"])
        verify_receipt(receipt, [bytes.fromhex(p) for p in answer["proof"]], public, entry)
        data: dict[str, Any] = json.loads(entry)
        if data["data"].get("key_id") != self._key_id:
            raise ProofError("the receipt's entry is not this key's request")
        return data
